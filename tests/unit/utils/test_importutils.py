"""The one dotted-class loader behind volume_drivers, volume_driver and iscsi_helper."""

import pytest

from hvplug import exception
from hvplug.target import registry as target_registry
from hvplug.target.base import ISCSITargetHelper
from hvplug.target.tgt import TgtAdm
from hvplug.utils.importutils import ImportClassError, import_class


def test_imports_the_class_and_checks_the_base():
    assert import_class("hvplug.target.tgt.TgtAdm", ISCSITargetHelper) is TgtAdm
    assert import_class(" hvplug.target.tgt.TgtAdm ") is TgtAdm


@pytest.mark.parametrize(("path", "kind", "reason"), [
    ("nodots", "syntax", "expected a dotted.path.Class"),
    ("", "syntax", "expected a dotted.path.Class"),
    ("hvplug.nosuch.Thing", "import", "cannot import hvplug.nosuch: "),
    ("hvplug.target.tgt.Nope", "missing", "hvplug.target.tgt has no Nope"),
    ("hvplug.target.tgt.LOG", "type", "hvplug.target.tgt.LOG is not a class"),
    ("hvplug.exception.InvalidInput", "type",
     "hvplug.exception.InvalidInput is not a ISCSITargetHelper subclass"),
])
def test_each_failure_has_a_kind_and_a_reason(path, kind, reason):
    base = ISCSITargetHelper if path.startswith("hvplug.exception") else None
    with pytest.raises(ImportClassError) as err:
        import_class(path, base)
    assert err.value.kind == kind
    assert err.value.reason.startswith(reason)


def test_a_broken_helper_names_the_option(monkeypatch):
    monkeypatch.setitem(target_registry.HELPER_CLASSES, "tgtadm", "hvplug.target.tgt.Nope")
    with pytest.raises(exception.InvalidInput, match=r"\[target\] iscsi_helper = tgtadm: "):
        target_registry.helper_class("tgtadm")
