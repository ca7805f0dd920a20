"""The documentation and the package stand on their own.

A reader has a clone of this repository and nothing else, so nothing under
doc/, README.md, CONTRIBUTING.md or hvplug/ may send them to a path outside
it: a sibling checkout (``../shared/...``), a machine-specific absolute
path (``/work/...``), notes that were never part of the repository
(``shared/reference``, ``seeds/``).  Relative Markdown links must also land
on a file of the repository that exists.
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "doc", REPO / "hvplug"]

OUTSIDE = [
    (re.compile(r"(?:\.\./)+shared\b"), "a sibling directory of the clone (../shared)"),
    (re.compile(r"/work/"), "an absolute path of one machine (/work/...)"),
    (re.compile(r"\bshared/reference\b"), "reference notes that are not in the repository"),
    (re.compile(r"\bseeds/"), "seed files that are not in the repository"),
]
# [text](target) in Markdown; the target up to a blank, ')' or '#'.
LINK = re.compile(r"\]\(\s*<?([^)\s>#]+)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:


def scanned_files() -> list[Path]:
    files = []
    for root in SCANNED:
        candidates = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in candidates:
            if path.is_file() and "__pycache__" not in path.parts \
                    and path.suffix not in (".pyc", ".pyo"):
                files.append(path)
    return files


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None  # binary
    return data.decode("utf-8", errors="replace")


def outside_references(path: Path, text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path.relative_to(REPO)}:{number}"
        for pattern, what in OUTSIDE:
            if pattern.search(line):
                found.append(f"{where}: {what}: {line.strip()}")
        if path.suffix != ".md":
            continue
        for target in LINK.findall(line):
            if EXTERNAL.match(target):
                continue
            resolved = (path.parent / target).resolve()
            if not resolved.is_relative_to(REPO):
                found.append(f"{where}: link {target!r} leads out of the repository")
            elif not resolved.exists():
                found.append(f"{where}: link {target!r} names no file of the repository")
    return found


def test_the_scan_covers_the_docs_and_the_package():
    names = {str(p.relative_to(REPO)) for p in scanned_files()}
    assert {"README.md", "CONTRIBUTING.md", "doc/user-guide.md",
            "hvplug/__init__.py"} <= names


@pytest.mark.parametrize(("line", "hits"), [
    ("see ../shared/reference/target-side.md", 2),
    ("see ../../shared/STYLE.md", 1),
    ("as /work/main/tools/demo.py does", 1),
    ("from seeds/000_x.txt", 1),
    ("[guide](../../outside.md)", 1),
    ("[guide](missing.md#part)", 1),
    ("[guide](user-guide.md#install) and [web](https://example.org/a/../b)", 0),
    ("ls -l /dev/disk/by-path/  # -> ../../sdX", 0),
    ("a shared target; the fuzz seed", 0),
])
def test_the_check_itself(line, hits):
    assert len(outside_references(REPO / "doc" / "example.md", line)) == hits


def test_nothing_points_outside_the_repository():
    found = []
    for path in scanned_files():
        text = text_of(path)
        if text is not None:
            found += outside_references(path, text)
    assert not found, ("these lines refer to paths outside the repository; a clone "
                       "must be enough to follow them:\n" + "\n".join(found))
