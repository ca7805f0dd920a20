"""A target helper whose 'daemon' is a dict, for tests of the shared flow."""

from hvplug import exception
from hvplug.target.base import ISCSITargetHelper

DAEMON: dict[str, dict] = {}  # iqn -> {"tid", "path", "user", "acl"}


class FakeHelper(ISCSITargetHelper):
    helper_name = "tgtadm"
    supports_iser = True
    fail_create = False

    def _target_create(self, export):
        if self.fail_create:
            raise exception.TargetError(helper="fake", action="create", iqn=export.iqn,
                                        reason="injected failure")
        tid = max((t["tid"] for t in DAEMON.values()), default=0) + 1
        DAEMON[export.iqn] = {"tid": tid, "path": export.path,
                              "user": export.auth_username, "acl": []}
        return tid

    def _target_exists(self, export):
        return export.iqn in DAEMON

    def _target_remove(self, export):
        DAEMON.pop(export.iqn, None)

    def _grant(self, export, initiator):
        DAEMON[export.iqn]["acl"].append(initiator)

    def _revoke(self, export, initiator):
        DAEMON[export.iqn]["acl"].remove(initiator)
