"""tgt (the userspace ``tgtd``) as the target helper ``tgtadm``.

Every export is one tgt target holding the volume as LUN 1 (LUN 0 is tgt's
controller), open to every initiator address (``ALL``) and guarded by a
CHAP account of its own -- what Cinder's tgt helper does.  Two copies of it
exist:

- live, in tgtd, made through its management socket (``TgtdIPC``): a
  handful of requests, no process forked, no CHAP password in any argv, and
  no re-read of every other target the way ``tgt-admin --update`` does;
- persisted, as a stanza ``<volumes_dir>/volume-<id>.conf`` (template
  ``xml_templates/tgt_target.conf``), mode 0600 because it holds the CHAP
  password, written atomically.  tgtd reads these at boot when its config
  says ``include <volumes_dir>/*.conf`` (e.g. in
  ``/etc/tgt/conf.d/hvplug.conf``), and ``tgt-admin --update ALL -c FILE``
  rebuilds the same targets from them; hvplug itself restores from its
  export records with ``ensure_exports``, which needs neither.

The live target matches its stanza directive by directive: ``driver``
is the lld the target is made with, ``incominguser`` the bound account,
and ``write-cache off`` the caching mode page tgt-admin sets for it.

Creation and removal run under a process-wide lock and a flock on
``<volumes_dir>/.lock``, so hvplug threads and processes never pick the
same tid; other tgtd clients that do are refused by tgtd ("already
exists") and the next free tid is taken.
"""

import contextlib
import logging
import os
import re
import time
from pathlib import Path

from hvplug import exception, templates
from hvplug.target import tgtd_ipc
from hvplug.target.base import ISCSITargetHelper, check_config_values
from hvplug.target.export import Export
from hvplug.target.tgtd_ipc import (
    Err,
    Mode,
    Op,
    TargetInfo,
    TgtdError,
    TgtdIPC,
    tolerate,
)
from hvplug.utils import fileutils

LOG = logging.getLogger(__name__)

STANZA_TEMPLATE = "tgt_target.conf"
# What tgt-admin sends for "write-cache off": the caching mode page with
# WCE cleared (tgt's default page has 0x14 where this has 0x10).
WRITE_CACHE_OFF_PAGE = "8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:0x14:0:0:0:0:0:0"
WRITE_CACHE_ON_PAGE = "8:0:18:0x14:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:0x14:0:0:0:0:0:0"
TID_ATTEMPTS = 20
DELETE_ATTEMPTS = 5

# Characters that would break a stanza line (Config::General splits on
# blanks, '#' starts a comment, '<'/'>' open blocks) or a tgtd parameter.
_UNSAFE = re.compile(r"[\s\"'#<>,\\\x00-\x1f\x7f]")

_NEXT_TID: dict[str, int] = {}  # socket path -> tid to try first


class TgtAdm(ISCSITargetHelper):
    """Export volumes with tgtd (``initialize_connection``: see
    :meth:`ISCSITargetHelper.initialize_connection`).

    ``socket_path`` names the tgtd to use (``/var/run/tgtd/socket.<port>``
    for ``tgtd -C <port>``).
    """

    helper_name = "tgtadm"
    supports_iser = True

    def __init__(self, conf, execute=None, store=None, iser: bool | None = None,
                 socket_path: str | None = None):
        super().__init__(conf, execute=execute, store=store, iser=iser)
        self.socket_path = socket_path or conf.tgtd_socket
        self.volumes_dir = Path(conf.volumes_dir)
        self.tgtd = TgtdIPC(self.socket_path)  # lld iscsi: listings and accounts

    # -- the persisted stanza ------------------------------------------------
    def stanza_path(self, export: Export) -> Path:
        return self.volumes_dir / f"{export.name}.conf"

    def stanza(self, export: Export) -> str:
        """The stanza text; a line left empty (no CHAP) is dropped."""
        check_stanza_values(export)
        chap = ""
        if export.auth_method == "CHAP":
            chap = f"incominguser {export.auth_username} {export.auth_password}"
        text = templates.render(
            STANZA_TEMPLATE, volume_id=export.volume_id, iqn=export.iqn,
            path=export.path, driver=_lld(export), incominguser=chap,
            write_cache="on" if self.conf.iscsi_write_cache else "off")
        return "".join(line for line in text.splitlines(keepends=True) if line.strip())

    def _write_stanza(self, export: Export, text: str) -> None:
        fileutils.private_dir(self.volumes_dir)
        fileutils.write_private_file(self.stanza_path(export), text)

    @contextlib.contextmanager
    def _file_errors(self, action: str, export: Export):
        """An OSError on volumes_dir (permissions, full disk) as a TargetError."""
        try:
            yield
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else f"{self.volumes_dir}: "
            raise self._error(action, export, where + (exc.strerror or str(exc))) from exc

    def _locked(self):
        """Threads and processes take turns: the tid is picked and the
        target built while holding this."""
        fileutils.private_dir(self.volumes_dir)
        return fileutils.locked(self.volumes_dir / ".lock")

    # -- the hooks of ISCSITargetHelper --------------------------------------
    def _check_values(self, export: Export) -> None:
        check_stanza_values(export)

    def _target_create(self, export: Export) -> int:
        text = self.stanza(export)
        check_backing_store(export.path)
        with self._file_errors("create", export), self._locked():
            self._write_stanza(export, text)
            return self._create_live(export)

    def _target_exists(self, export: Export) -> bool:
        return self._serves(export, self._lookup(export.iqn))

    def _target_remove(self, export: Export) -> None:
        with self._file_errors("remove", export), self._locked():
            try:
                self._remove_live(export, export.tid)
            except exception.TargetError:
                raise
            except exception.HvplugError as exc:
                raise self._error("remove", export, exc.message) from exc
            self.stanza_path(export).unlink(missing_ok=True)

    # -- restoring -------------------------------------------------------------
    def ensure_export(self, volume_id: str) -> Export:
        export = self.export(volume_id)
        self._ensure(export, self._lookup(export.iqn))
        return export

    def restore_exports(self, exports: list[Export]):
        """Restore ``exports``, reading tgtd's targets once; each on its own."""
        if not exports:
            return [], []
        live = {t.iqn: t for t in self.tgtd.list_targets().values()}
        done, failed = [], []
        for export in exports:
            try:
                self._ensure(export, live.get(export.iqn))
            except exception.HvplugError as exc:
                LOG.error("could not restore %s: %s", export.iqn, exc.message)
                failed.append((export, exc))
            else:
                done.append(export)
        return done, failed

    def _ensure(self, export: Export, info: TargetInfo | None) -> None:
        if info is None or not self._serves(export, info):
            self._recreate(export)
            return
        text = self.stanza(export)
        path = self.stanza_path(export)
        with self._file_errors("restore", export):
            if not path.is_file() or path.read_text() != text:
                with self._locked():
                    self._write_stanza(export, text)
        if export.tid != info.tid:  # tgtd was restarted and someone restored it
            export.tid = info.tid
            self.store.save(export)

    def _serves(self, export: Export, info: TargetInfo | None) -> bool:
        """Whether ``info`` (tgtd's view) is ``export``, ready for logins."""
        if info is None:
            return False
        lun = info.luns.get(export.lun)
        if lun is None or lun.backing_store != export.path or "ALL" not in info.acls:
            return False
        # tgtd lists accounts of iscsi targets only
        return (export.auth_method != "CHAP" or export.iser
                or export.auth_username in info.accounts)

    # -- live creation ---------------------------------------------------------
    def _create_live(self, export: Export) -> int:
        ipc = self._ipc(export)
        tid = None
        try:
            tid = self._new_target(ipc, export)
            self._configure(ipc, tid, export)
        except BaseException as exc:
            if isinstance(exc, exception.IqnInUse):
                # the target is someone else's: nothing of it is ours to undo
                self.stanza_path(export).unlink(missing_ok=True)
                raise
            self._undo_create(ipc, export, tid, exc)
            if isinstance(exc, exception.InvalidInput):
                raise
            if isinstance(exc, exception.HvplugError):
                raise self._create_error(export, exc) from exc
            raise
        return tid

    def _configure(self, ipc: TgtdIPC, tid: int, export: Export) -> None:
        """LUN 1, CHAP, the ``ALL`` ACL, then LUN 1 verified.

        Cinder saw targets come up without LUN 1; the second ``_ensure_lun``
        is the check (tgtd answers "already exists") and the repair at once.
        """
        self._ensure_lun(ipc, tid, export)
        # check_stanza_values refused a CHAP export without user or password
        if export.chap is not None:
            self._bind_account(ipc, tid, *export.chap)
        tolerate(Err.ACL_EXIST, ipc.bind_initiator, tid, address="ALL")
        if self._ensure_lun(ipc, tid, export):
            LOG.warning("LUN %s of %s was missing after creation; re-created it",
                        export.lun, export.iqn)

    def _new_target(self, ipc: TgtdIPC, export: Export) -> int:
        """Create the target at a free tid, or adopt it if it already exists.

        The tid to try comes from the last creation, so the common case is
        one request; a refusal (tid taken by another client, or this IQN
        already there) costs one listing of tgtd's targets.
        """
        tid = _NEXT_TID.get(self.socket_path, 1)
        for _ in range(TID_ATTEMPTS):
            try:
                ipc.new_target(tid, export.iqn)
            except TgtdError as exc:
                if exc.code != Err.TARGET_EXIST:
                    raise
                targets = self.tgtd.list_targets()
                mine = next((t for t in targets.values() if t.iqn == export.iqn), None)
                if mine is not None and self._adopt(ipc, mine, export):
                    return mine.tid
                tid = tgtd_ipc.first_free_tid(targets, tid + 1)
                continue
            _NEXT_TID[self.socket_path] = tid + 1
            return tid
        raise self._error("create", export,
                          f"no free tid after {TID_ATTEMPTS} attempts")

    def _adopt(self, ipc: TgtdIPC, info: TargetInfo, export: Export) -> bool:
        """Complete an existing target of this IQN; refuse one serving another file.

        Such a target is another volume's (or another tool's): replacing it
        would cut that volume off, so ``IqnInUse`` names it and the fix.
        """
        lun = info.luns.get(export.lun)
        if lun is not None and lun.backing_store != export.path:
            raise exception.IqnInUse(
                iqn=export.iqn, other_path=repr(lun.backing_store), path=repr(export.path),
                owner=f"tgtd target tid {info.tid}",
                fix="If that target is stale, remove it ('hvplug target remove-export' "
                    "for its volume, or 'tgtadm --lld iscsi --mode target --op delete "
                    f"--force --tid {info.tid}'); otherwise pick another volume id.")
        LOG.info("target %s already exists (tid %s); completing it", export.iqn, info.tid)
        if lun is not None:
            self._set_write_cache(ipc, info.tid, export, adopted=True)
        return True

    def _ensure_lun(self, ipc: TgtdIPC, tid: int, export: Export) -> bool:
        """Create LUN 1 unless tgtd already has it; True if it was created."""
        try:
            ipc.new_lun(tid, export.lun, export.path, bstype="rdwr")
        except TgtdError as exc:
            if exc.code != Err.LUN_EXIST:
                raise
            return False
        self._set_write_cache(ipc, tid, export)
        return True

    def _set_write_cache(self, ipc: TgtdIPC, tid: int, export: Export,
                         adopted: bool = False) -> None:
        """As tgt-admin: only "off" needs a request on a new LUN."""
        if self.conf.iscsi_write_cache and not adopted:
            return
        page = WRITE_CACHE_ON_PAGE if self.conf.iscsi_write_cache else WRITE_CACHE_OFF_PAGE
        ipc.request(Mode.DEVICE, Op.UPDATE, {"mode_page": page}, tid=tid, lun=export.lun)

    def _bind_account(self, ipc: TgtdIPC, tid: int, user: str, password: str) -> None:
        try:
            self.tgtd.new_account(user, password)
        except TgtdError as exc:
            if exc.code != Err.USER_EXIST:
                raise
            # A leftover of this export may hold an older password.
            self.tgtd.delete_account(user)
            self.tgtd.new_account(user, password)
        # tgtd answers USER_EXIST when the account is bound already
        tolerate(Err.USER_EXIST, ipc.bind_account, tid, user)

    def _undo_create(self, ipc: TgtdIPC, export: Export, tid: int | None,
                     error: BaseException) -> None:
        """Leave nothing of a failed create: target, account, stanza."""
        try:
            if tid is None and not isinstance(error, TgtdError):
                # tgtd may have made the target before the answer was lost
                found = self._lookup(export.iqn)
                tid = found.tid if found else None
            if tid is not None:
                self._delete_target(ipc, tid, export.iqn)
            self._delete_account(export)
        except exception.HvplugError as exc:
            LOG.error("cleaning up the failed target %s: %s", export.iqn, exc.message)
        self.stanza_path(export).unlink(missing_ok=True)

    # -- live removal ----------------------------------------------------------
    def _remove_live(self, export: Export, tid_hint: int | None) -> None:
        ipc = self._ipc(export)
        tid = self._owned_tid(ipc, export, tid_hint)
        if tid is not None:
            self._delete_target(ipc, tid, export.iqn)
        self._delete_account(export)

    def _delete_account(self, export: Export) -> None:
        """Delete the export's account (tgtd unbinds it everywhere); absent is fine."""
        if export.auth_method == "CHAP" and export.auth_username:
            tolerate(Err.NO_USER, self.tgtd.delete_account, export.auth_username)

    def _owned_tid(self, ipc: TgtdIPC, export: Export, hint: int | None) -> int | None:
        """The tid of ``export``'s target now, or None if tgtd has none.

        A recorded tid may be stale (tgtd restarted and gave it to another
        target), and only a listing of every target names them.  Binding
        this export's own CHAP account to the recorded tid asks more
        cheaply: tgtd answers "already exists" exactly when the account is
        bound there, which proves the target ours and changes nothing.  A
        bind that succeeds hit another target and is undone at once.
        """
        user = export.auth_username
        if hint is not None and export.auth_method == "CHAP" and user:
            try:
                ipc.bind_account(hint, user)
            except TgtdError as exc:
                if exc.code == Err.USER_EXIST:
                    return hint
                if exc.code not in (Err.NO_TARGET, Err.NO_USER, Err.NO_DRIVER):
                    raise
            else:
                tolerate(Err.NO_USER, ipc.unbind_account, hint, user)
        found = self._lookup(export.iqn)
        if found is None:
            return None
        lun = found.luns.get(export.lun)
        if (lun is not None and lun.backing_store != export.path
                and export.auth_username not in found.accounts):
            # same IQN, another file, not our account: another volume's target
            LOG.warning("target %s (tid %s) serves %s, not %s: it is not this export's, "
                        "so it stays", export.iqn, found.tid, lun.backing_store, export.path)
            return None
        return found.tid

    def _delete_target(self, ipc: TgtdIPC, tid: int, iqn: str) -> None:
        """Force-delete target ``tid`` (``iqn``) and make sure it is gone.

        tgtd refuses ("still active") while a forced session teardown is
        under way, and some versions answered success and kept the target;
        so check, and try again a few times.
        """
        for attempt in range(DELETE_ATTEMPTS):
            tolerate((Err.NO_TARGET, Err.TARGET_ACTIVE), ipc.delete_target, tid, force=True)
            if not _answers(ipc, tid):
                return
            found = self._lookup(iqn)  # the tid answers: still ours, or reused?
            if found is None:
                return
            tid = found.tid
            time.sleep(0.1 * (attempt + 1))
        raise exception.TargetError(
            helper=self.helper_name, action="remove", iqn=iqn,
            reason=f"tgtd still has it (tid {tid}) after {DELETE_ATTEMPTS} forced deletes")

    # -- helpers ---------------------------------------------------------------
    def _ipc(self, export: Export) -> TgtdIPC:
        """The client for ``export``'s target: its lld is the stanza's driver."""
        if not export.iser:
            return self.tgtd
        return TgtdIPC(self.socket_path, lld="iser")

    def _lookup(self, iqn: str) -> TargetInfo | None:
        """tgtd's view of target ``iqn``; only its own block is parsed."""
        text = self.tgtd.show_targets()
        match = re.search(rf"(?m)^Target \d+: {re.escape(iqn)}$", text)
        if match is None:
            return None
        end = text.find("\nTarget ", match.end())
        block = text[match.start():end + 1 if end != -1 else len(text)]
        return next(iter(tgtd_ipc.parse_targets(block).values()))

    def _error(self, action: str, export: Export, reason: str) -> exception.TargetError:
        return exception.TargetError(helper=self.helper_name, action=action,
                                     iqn=export.iqn, reason=reason)

    def _create_error(self, export: Export, exc: exception.HvplugError) -> Exception:
        if export.iser and isinstance(exc, TgtdError) and exc.code == Err.NO_DRIVER:
            return exception.IserUnavailable(
                reason="tgtd answered \"can't find the driver\" for the 'iser' lld "
                       "(no RDMA device, or tgtd's iSER driver failed to start)")
        if isinstance(exc, exception.TargetError):
            return exc
        return self._error("create", export, exc.message)


def check_stanza_values(export: Export) -> None:
    """Refuse values that would break or inject into a stanza line."""
    if not export.iqn or _UNSAFE.search(export.iqn):
        raise exception.InvalidInput(
            reason=f"IQN {export.iqn!r} cannot go into a tgt stanza")
    check_config_values(export, _UNSAFE, "a tgt stanza",
                        "free of blanks, quotes, '#', '<', '>', ',', '\\' and control "
                        "characters")


def check_backing_store(path: str) -> None:
    if not os.path.isabs(path):
        raise exception.InvalidInput(reason=f"backing store {path} must be an absolute path")
    if not os.path.exists(path):
        raise exception.InvalidInput(
            reason=f"backing store {path} does not exist; create the file or device first")


def _lld(export: Export) -> str:
    return "iser" if export.iser else "iscsi"


def _answers(ipc: TgtdIPC, tid: int) -> bool:
    """Whether tgtd has a target ``tid`` (one cheap request, no listing)."""
    try:
        ipc.show_target_params(tid)
    except TgtdError as exc:
        if exc.code == Err.NO_TARGET:
            return False
        raise
    return True
