"""The simulated array's iSCSI data path: one tgtd target per array.

The target's IQN is the one ``/controllers`` reports as the ioport
endpoint; each presented volume is one LUN of it (the LUN of its
allocations), each iSCSI host with an allocation one initiator-name ACL, and
the array's CHAP-in account is bound to it.  tgtd is shared with others, so
only this target and this account are ever touched.
"""

import logging
import threading

from hvplug.target.tgtd_ipc import Err, TgtdError, TgtdIPC, tolerate

LOG = logging.getLogger(__name__)


class TgtdExporter:
    """Keeps tgtd's target ``iqn`` in step with the array's presentations."""

    def __init__(self, iqn: str, socket_path: str = "/var/run/tgtd/socket.0"):
        self.iqn = iqn
        self.ipc = TgtdIPC(socket_path)
        self.tid: int | None = None
        self.chap: tuple[str, str] | None = None
        self._lock = threading.Lock()

    def sync(self, luns: dict[int, str], initiators: set[str],
             chap: tuple[str, str] | None) -> None:
        """Make the target serve exactly ``luns`` (LUN -> file) to
        ``initiators``; no LUN at all removes the target and the account."""
        with self._lock:
            if not luns:
                self._teardown()
                return
            info = self._ensure_target()
            self._sync_chap(chap)
            for lun, path in luns.items():
                have = info.luns.get(lun) if info else None
                if have is not None and have.backing_store != path:
                    self.ipc.delete_lun(self.tid, lun)
                    have = None
                if have is None:
                    self.ipc.new_lun(self.tid, lun, path, bstype="rdwr")
            for lun in set(info.luns if info else ()) - set(luns) - {0}:
                tolerate(Err.NO_LUN, self.ipc.delete_lun, self.tid, lun)
            acls = set(info.acls) if info else set()
            for name in initiators - acls:
                tolerate(Err.ACL_EXIST, self.ipc.bind_initiator, self.tid, name=name)
            for name in acls - initiators:
                tolerate(Err.ACL_NOEXIST, self.ipc.unbind_initiator, self.tid, name=name)

    def refresh_lun(self, lun: int, path: str) -> None:
        """Re-create ``lun`` so tgtd sees a grown file (tgtd reads the size once)."""
        with self._lock:
            if self.tid is None:
                return
            try:
                self.ipc.delete_lun(self.tid, lun)
                self.ipc.new_lun(self.tid, lun, path, bstype="rdwr")
            except TgtdError as exc:  # a LUN in use may refuse; it keeps its old size
                LOG.warning("could not refresh LUN %s of %s: %s", lun, self.iqn, exc)

    def teardown(self) -> None:
        with self._lock:
            self._teardown()

    # -- internals -------------------------------------------------------------
    def _lookup(self):
        for info in self.ipc.list_targets().values():
            if info.iqn == self.iqn:
                return info
        return None

    def _ensure_target(self):
        info = self._lookup()
        if info is None:
            self.tid = self.ipc.new_target(None, self.iqn)
            LOG.info("tgtd target %s created (tid %s)", self.iqn, self.tid)
            return None
        self.tid = info.tid
        return info

    def _sync_chap(self, chap: tuple[str, str] | None) -> None:
        if chap == self.chap:
            return
        if self.chap is not None:
            tolerate(Err.NO_USER, self.ipc.delete_account, self.chap[0])
        if chap is not None:
            user, password = chap
            try:
                self.ipc.new_account(user, password)
            except TgtdError as exc:
                if exc.code != Err.USER_EXIST:
                    raise
                # a leftover of an earlier run; its password may differ
                self.ipc.delete_account(user)
                self.ipc.new_account(user, password)
            tolerate(Err.USER_EXIST, self.ipc.bind_account, self.tid, user)
        self.chap = chap

    def _teardown(self) -> None:
        info = self._lookup()
        if info is not None:
            tolerate((Err.NO_TARGET,), self.ipc.delete_target, info.tid, force=True)
            LOG.info("tgtd target %s removed", self.iqn)
        if self.chap is not None:
            tolerate(Err.NO_USER, self.ipc.delete_account, self.chap[0])
        self.tid = None
        self.chap = None


