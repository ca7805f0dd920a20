"""Check generated XML: against libvirt's own schemas, and against golden files.

    from tests import xmlcheck
    xmlcheck.assert_valid_disk(disk.to_xml())
    xmlcheck.assert_golden(disk.to_xml(), "virt/disk_file.xml")

Golden files live under ``tests/data/``; run with ``HVPLUG_REGEN_GOLDEN=1``
to rewrite them from what the code produces now (then review the diff).
"""

import difflib
import functools
import os
from pathlib import Path

from lxml import etree

SCHEMA_DIR = Path("/usr/share/libvirt/schemas")
DATA_DIR = Path(__file__).resolve().parent / "data"
REGEN_ENV = "HVPLUG_REGEN_GOLDEN"

# The least a domain needs to satisfy domain.rng; a disk is validated inside it.
MINIMAL_DOMAIN = """
<domain type='qemu'>
  <name>hvplug-xmlcheck</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices/>
</domain>
"""


@functools.cache
def _schema(name: str) -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA_DIR / name)))


def _parse(xml: str) -> etree._Element:
    parser = etree.XMLParser(remove_blank_text=True)
    return etree.fromstring(xml.encode("utf-8"), parser)


def _assert_valid(root: etree._Element, schema_name: str, shown: str) -> None:
    schema = _schema(schema_name)
    if not schema.validate(root):
        errors = "\n".join(str(error) for error in schema.error_log)
        raise AssertionError(
            f"XML is not valid per {schema_name}:\n{errors}\n--- XML:\n{shown}")


def assert_valid_domain(xml: str) -> None:
    """Fail unless ``xml`` is a ``<domain>`` that domain.rng accepts."""
    _assert_valid(_parse(xml), "domain.rng", xml)


def assert_valid_disk(xml: str) -> None:
    """Fail unless the ``<disk>`` in ``xml`` is valid inside a minimal domain."""
    domain = _parse(MINIMAL_DOMAIN)
    domain.find("devices").append(_parse(xml))
    _assert_valid(domain, "domain.rng", xml)


def assert_valid_secret(xml: str) -> None:
    """Fail unless ``xml`` is a ``<secret>`` that secret.rng accepts.

    One known gap is bridged: secret.rng's ``objectName`` forbids '/' in an
    iSCSI usage target, yet libvirt's parser accepts it and hvplug keys
    iSCSI CHAP secrets ``<iqn>/<lun>`` (the Nova/Cinder convention).  The
    slash is swapped for '-' before validating, so everything else is still
    checked; real libvirtd accepting the original is covered by the
    functional and contract tests.
    """
    root = _parse(xml)
    for target in root.xpath("./usage[@type='iscsi']/target"):
        target.text = (target.text or "").replace("/", "-")
    _assert_valid(root, "secret.rng", xml)


def normalise(xml: str) -> str:
    """Canonical pretty form: whitespace and attribute order do not count."""
    canonical = etree.canonicalize(_parse(xml), strip_text=True,
                                   with_comments=False)
    return etree.tostring(_parse(canonical), encoding="unicode",
                          pretty_print=True)


def _golden_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if path.is_absolute() else DATA_DIR / path


def assert_golden(xml: str, path: str | os.PathLike) -> None:
    """Fail, with a unified diff, unless ``xml`` matches the golden file.

    ``path`` is relative to ``tests/data/`` (or absolute).  With
    ``HVPLUG_REGEN_GOLDEN=1`` the file is (re)written instead.
    """
    golden = _golden_path(path)
    if os.environ.get(REGEN_ENV) == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(etree.tostring(_parse(xml), encoding="unicode",
                                         pretty_print=True))
        return
    if not golden.exists():
        raise AssertionError(
            f"golden file {golden} is missing; run with {REGEN_ENV}=1 to "
            f"create it")
    expected, actual = normalise(golden.read_text()), normalise(xml)
    if expected != actual:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=str(golden), tofile="generated")
        raise AssertionError(
            f"XML differs from golden file ({REGEN_ENV}=1 rewrites it):\n"
            + "".join(diff))
