"""The import direction of hvplug's layers, read from the source (ast).

    cli  ->  virt, drivers, target, image  ->  initiator  ->  conf, utils
                                                  (connection_schema, exception, templates: anyone)

- ``hvplug.utils``, ``hvplug.conf``, ``hvplug.initiator``, ``hvplug.target``
  and ``hvplug.image`` import neither ``hvplug.virt`` nor ``hvplug.cli``;
- nothing outside ``hvplug.cli`` imports ``hvplug.cli``;
- ``hvplug.utils`` and ``hvplug.conf`` import only each other (and the
  shared modules); ``hvplug.initiator`` only those two;
- the shared top-level modules import no layer but ``hvplug.conf``/``utils``.

Every import counts, also one inside a function (a lazy import is still a
dependency).  doc/architecture.md draws the same picture.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hvplug"

# layer -> the layers it must not import
FORBIDDEN = {
    "utils": {"virt", "cli", "initiator", "target", "image", "drivers"},
    "conf": {"virt", "cli", "initiator", "target", "image", "drivers"},
    "initiator": {"virt", "cli", "target", "image", "drivers"},
    "target": {"virt", "cli", "drivers"},
    "image": {"virt", "cli", "drivers"},
    "virt": {"cli", "drivers", "target"},
    "drivers": {"cli", "virt"},
}
# Modules at the top of the package that every layer may use; they stand on
# conf and utils only.
SHARED = {"connection_schema", "exception", "templates"}
FORBIDDEN.update(dict.fromkeys(SHARED, FORBIDDEN["conf"]))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """Every hvplug module ``path`` imports, with the line, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], *filter(None, [base])])
            found += [(node.lineno, f"{base}.{alias.name}" if base == "hvplug" else base)
                      for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "hvplug"]


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(module_name(path))
        for line, name in imported(path):
            target = layer_of(name)
            if target is None or target == layer or target in SHARED:
                continue
            if target == "cli" or target in FORBIDDEN.get(layer, ()):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: "
                             f"hvplug.{layer} imports {name}")
    return found


def test_no_layer_imports_upwards():
    assert violations() == []


def test_every_layer_has_a_rule():
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers - {"cli"} == set(FORBIDDEN) - SHARED


@pytest.mark.parametrize(("source", "expected"), [
    ("import hvplug.virt.host\n", ["hvplug.virt.host"]),
    ("from hvplug.virt import attach\n", ["hvplug.virt"]),
    ("from hvplug import connection_schema\n", ["hvplug.connection_schema"]),
    ("def f():\n    from hvplug.cli import main\n", ["hvplug.cli"]),
    ("from ..virt import host\n", ["hvplug.virt"]),
    ("import os\nfrom lxml import etree\n", []),
])
def test_the_checker_sees_every_kind_of_import(tmp_path, monkeypatch, source, expected):
    package = tmp_path / "hvplug"
    (package / "target").mkdir(parents=True)
    path = package / "target" / "probe.py"
    path.write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", package)
    assert [name for _, name in imported(path)] == expected


def test_a_violation_is_reported_with_its_place(tmp_path, monkeypatch):
    package = tmp_path / "hvplug"
    (package / "initiator").mkdir(parents=True)
    (package / "initiator" / "bad.py").write_text("import os\nfrom hvplug.virt import host\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", package)
    assert violations() == ["hvplug/initiator/bad.py:2: hvplug.initiator imports hvplug.virt"]
