"""``[target] iscsi_helper``: which helper class exports volumes.

Helper modules are imported only when chosen, so LIO's rtslib-fb is not
loaded on a host that runs tgt.
"""

import logging

from hvplug import exception
from hvplug.target.base import ISCSITargetHelper
from hvplug.utils.importutils import ImportClassError, import_class

LOG = logging.getLogger(__name__)

HELPER_CLASSES = {
    "tgtadm": "hvplug.target.tgt.TgtAdm",
    "iseradm": "hvplug.target.tgt.TgtAdm",
    "lioadm": "hvplug.target.lio.LioAdm",
    "ietadm": "hvplug.target.iet.IetAdm",
    "chiscsi": "hvplug.target.chiscsi.ChiscsiAdm",
    "iscsictl": "hvplug.target.chiscsi.ChiscsiAdm",
}


def helper_class(name: str) -> type[ISCSITargetHelper]:
    path = HELPER_CLASSES[name]
    try:
        cls = import_class(path)
    except ImportClassError as exc:
        raise exception.InvalidInput(reason=f"[target] iscsi_helper = {name}: {exc.reason}") from None
    # checked here, not by import_class(path, base): a type checker takes no
    # abstract class where that expects a type[T]
    if not issubclass(cls, ISCSITargetHelper):
        raise exception.InvalidInput(reason=f"[target] iscsi_helper = {name}: {path} is not "
                                     f"a {ISCSITargetHelper.__name__} subclass")
    return cls


def target_from_conf(conf, helper: str | None = None, execute=None) -> ISCSITargetHelper:
    """The helper named by ``helper`` or ``conf.iscsi_helper``, ready to use."""
    name = helper or conf.iscsi_helper
    if name == "iseradm":
        LOG.warning("iscsi_helper = iseradm is deprecated: set iscsi_helper = tgtadm "
                    "and enable_iser = true (same behaviour)")
        return helper_class(name)(conf, execute=execute, iser=True)
    return helper_class(name)(conf, execute=execute)
