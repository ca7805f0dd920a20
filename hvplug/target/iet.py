"""IET (iSCSI Enterprise Target): live targets through ``ietadm``, persisted in ietd.conf.

IET numbers LUNs from 0, so an IET export's ``connection_info`` says
``target_lun: 0``::

    {"driver_volume_type": "iscsi",
     "data": {"target_portal": "192.0.2.10:3260",
              "target_iqn": "iqn.2010-10.org.openstack:volume-4f1c...",
              "target_lun": 0, "target_discovered": False, "volume_id": "4f1c...",
              "auth_method": "CHAP", "auth_username": "...", "auth_password": "...",
              "encrypted": False, "access_mode": "rw"}}

ietadm names targets only by tid, which it takes from /proc/net/iet/volume;
its exit status is the negative errno ietd answered, modulo 256 (see
doc/iet-chiscsi.md for where each code comes from).  ietd reads ietd.conf
only when it starts, so each export is also written there as one block::

    Target iqn.2010-10.org.openstack:volume-4f1c...
        IncomingUser <user> <password>
        Lun 0 Path=/srv/volumes/4f1c.img,Type=fileio
"""

import dataclasses
import logging
import os
import re
import stat
import threading
import time
from pathlib import Path

from hvplug import exception
from hvplug.target.base import ISCSITargetHelper, check_config_values, tool_error
from hvplug.target.export import Export
from hvplug.utils import fileutils

_IET_UNSAFE = re.compile(r"[\s,]")
LOG = logging.getLogger(__name__)

EXIT_EINVAL = 234  # ietd: a target of that name exists; kernel: no target with that tid
EXIT_EEXIST = 239  # kernel: the tid, or the LUN number, is taken
EXIT_EBUSY = 240  # kernel: the target still has sessions
EXIT_ENOENT = 254  # no such target, LUN, session or account
EXIT_ECONNREFUSED = 145  # ietd is not listening

LUN = 0
_TID_ATTEMPTS = 5
_BUSY_ATTEMPTS = 10
_BUSY_WAIT = 0.2  # seconds; ietd closes a session shortly after its last connection

_LOCK = threading.RLock()  # tid allocation and ietd.conf edits, within this process
_TID_LINE = re.compile(r"^tid:(\d+)\s+name:(\S+)")
_LUN_LINE = re.compile(r"^\s+lun:(\d+)\s.*?\bpath:(.*)$")
_SID_LINE = re.compile(r"^\s+sid:(\d+)\s")
_CID_LINE = re.compile(r"^\s+cid:(\d+)\s")


@dataclasses.dataclass
class LiveTarget:
    """One target as /proc/net/iet/volume shows it."""

    tid: int
    name: str
    luns: dict[int, str] = dataclasses.field(default_factory=dict)  # lun -> path


def parse_volumes(text: str) -> dict[str, LiveTarget]:
    """/proc/net/iet/volume by IQN (casefolded: ietd compares names ignoring case)."""
    targets: dict[str, LiveTarget] = {}
    current = None
    for line in text.splitlines():
        if m := _TID_LINE.match(line):
            current = LiveTarget(int(m[1]), m[2])
            targets[m[2].casefold()] = current
        elif current and (m := _LUN_LINE.match(line)):
            current.luns[int(m[1])] = m[2].strip()
    return targets


def parse_sessions(text: str) -> dict[int, list[tuple[int, int]]]:
    """/proc/net/iet/session as ``{tid: [(sid, cid), ...]}``."""
    sessions: dict[int, list[tuple[int, int]]] = {}
    tid = sid = None
    for line in text.splitlines():
        if m := _TID_LINE.match(line):
            tid, sid = int(m[1]), None
            sessions[tid] = []
        elif m := _SID_LINE.match(line):
            sid = int(m[1])
        elif tid is not None and sid is not None and (m := _CID_LINE.match(line)):
            sessions[tid].append((sid, int(m[1])))
    return sessions


def _is_target_line(line: str) -> bool:
    words = line.split()
    return bool(words) and words[0].casefold() == "target"


def _is_trivia(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def _block_spans(lines: list[str], iqn: str) -> list[tuple[int, int]]:
    """Where each ``Target <iqn>`` block sits; blank lines and comments that
    end a block stay with whatever follows it."""
    spans = []
    for start, line in enumerate(lines):
        words = line.split()
        if len(words) < 2 or not _is_target_line(line) or words[1].casefold() != iqn.casefold():
            continue
        end = start + 1
        while end < len(lines) and not _is_target_line(lines[end]):
            end += 1
        while end > start + 1 and _is_trivia(lines[end - 1]):
            end -= 1
        spans.append((start, end))
    return spans


def set_block(text: str, iqn: str, block: str | None) -> str:
    """``text`` with the block of ``iqn`` replaced by ``block`` (None: removed).

    Every other line stays byte for byte; a new block goes at the end.
    """
    lines = text.splitlines(keepends=True)
    spans = _block_spans(lines, iqn)
    for start, end in reversed(spans[1:]):  # duplicates Cinder's appends left
        del lines[start:end]
    new = block.splitlines(keepends=True) if block else []
    if spans:
        start, end = spans[0]
        lines[start:end] = new
    elif new:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += new
    return "".join(lines)


class IetAdm(ISCSITargetHelper):
    """Exports through IET: ``ietadm`` for the live target, ``iet_conf`` for restarts."""

    helper_name = "ietadm"
    supports_iser = False
    proc_volume = "/proc/net/iet/volume"
    proc_session = "/proc/net/iet/session"

    def new_export(self, volume_id: str, path: str) -> Export:
        export = super().new_export(volume_id, path)
        export.lun = LUN  # IET's first LUN is 0 (Cinder's IetAdm used 0 too)
        return export

    # -- the hooks -----------------------------------------------------------
    def _target_create(self, export: Export) -> int:
        self._check_values(export)
        try:
            with _LOCK:
                tid = self._create_locked(export)
        except (exception.ProcessExecutionError, OSError) as e:
            raise self._error("create", export, e) from None
        LOG.debug("IET target %s is tid %s", export.iqn, tid)
        return tid

    def _create_locked(self, export: Export) -> int:
        tid, created = self._open_target(export)
        # deleting a target also drops its LUNs and accounts
        undo: list[tuple[str, ...]] = [("--op", "delete", f"--tid={tid}")] if created else []
        try:
            if self._add_lun(tid, export) and not created:
                undo.append(("--op", "delete", f"--tid={tid}", f"--lun={LUN}"))
            if self._add_account(tid, export) and not created:
                undo.append(("--op", "delete", f"--tid={tid}", "--user",
                             f"--params=IncomingUser={export.auth_username}"))
            self._edit_conf(export.iqn, self._block(export))
        except (exception.ProcessExecutionError, exception.TargetError, OSError):
            self._undo(tid, undo)
            raise
        return tid

    def _target_exists(self, export: Export) -> bool:
        live = self._volumes().get(export.iqn.casefold())
        return live is not None and live.luns.get(LUN) == export.path

    def _target_remove(self, export: Export) -> None:
        live = self._volumes().get(export.iqn.casefold())
        try:
            if live:
                # 254: the LUN is already gone; 234: so is the whole target
                self._ietadm("--op", "delete", f"--tid={live.tid}", f"--lun={LUN}",
                             tolerate=(EXIT_ENOENT, EXIT_EINVAL))
                self._delete_target(live.tid, export)
            with _LOCK:
                self._edit_conf(export.iqn, None)
        except (exception.ProcessExecutionError, OSError) as e:
            raise self._error("remove", export, e) from None

    # -- steps ---------------------------------------------------------------
    def _open_target(self, export: Export) -> tuple[int, bool]:
        """The tid serving ``export.iqn``, creating the target when there is
        none; ``(tid, created)``."""
        for _ in range(_TID_ATTEMPTS):
            live = self._volumes()
            if found := live.get(export.iqn.casefold()):
                return found.tid, False
            # one above the highest live tid, never a gap below it (unlike tgt,
            # whose tgtd_ipc.first_free_tid fills gaps from its last tid on)
            tid = max((t.tid for t in live.values()), default=0) + 1
            # 234: another process created this name first (found on the next
            # pass); 239: another target took this tid (the next pass picks anew)
            status = self._ietadm("--op", "new", f"--tid={tid}", "--params",
                                  f"Name={export.iqn}", tolerate=(EXIT_EINVAL, EXIT_EEXIST))
            if status == 0:
                return tid, True
        raise self._error("create", export, f"no free tid after {_TID_ATTEMPTS} attempts: "
                          "other processes keep taking them, or ietd rejects the name")

    def _add_lun(self, tid: int, export: Export) -> bool:
        params = f"Path={export.path},Type={self._iotype(export.path)}"
        # 239: LUN 0 exists already -- fine if it serves this very path
        status = self._ietadm("--op", "new", f"--tid={tid}", f"--lun={LUN}", "--params",
                              params, tolerate=(EXIT_EEXIST,))
        if status == EXIT_EEXIST:
            serving = self._volumes().get(export.iqn.casefold())
            path = serving.luns.get(LUN) if serving else None
            if path != export.path:
                raise self._error("create", export, f"LUN {LUN} of tid {tid} already "
                                  f"serves {path}, not {export.path}")
            return False
        return True

    def _add_account(self, tid: int, export: Export) -> bool:
        if export.chap is None:
            return False
        user, password = export.chap
        # ietadm takes a CHAP password only inside --params: IET has no stdin or
        # file input for accounts, so the password is on ietadm's argv (visible
        # in the process list) while it runs.  That is IET's limitation;
        # secrets= at least keeps it out of hvplug's errors.
        self._ietadm("--op", "new", f"--tid={tid}", "--user",
                     f"--params=IncomingUser={user},Password={password}",
                     secrets=(password,))
        return True

    def _undo(self, tid: int, steps: list[tuple[str, ...]]) -> None:
        """Best effort: take back, newest first, what ``_target_create`` did."""
        for args in reversed(steps):
            try:
                self._ietadm(*args, tolerate=(EXIT_ENOENT, EXIT_EINVAL))
            except exception.ProcessExecutionError as e:
                LOG.warning("could not undo %s on tid %s: %s", " ".join(args[:2]), tid,
                            e.stderr)

    def _delete_target(self, tid: int, export: Export) -> None:
        """Close the target's sessions, then delete it; 254 means it is gone."""
        for _ in range(_BUSY_ATTEMPTS):
            for sid, cid in parse_sessions(_read(self.proc_session)).get(tid, []):
                self._ietadm("--op", "delete", f"--tid={tid}", f"--sid={sid}", f"--cid={cid}",
                             tolerate=(EXIT_ENOENT, EXIT_EINVAL))
            status = self._ietadm("--op", "delete", f"--tid={tid}",
                                  tolerate=(EXIT_ENOENT, EXIT_EBUSY))
            if status != EXIT_EBUSY:
                return
            time.sleep(_BUSY_WAIT)
        raise self._error("remove", export, f"tid {tid} still has sessions after "
                          f"{_BUSY_ATTEMPTS} attempts to close them (ietadm exit 240, EBUSY); "
                          "log the initiators out and retry")

    # -- ietd.conf -----------------------------------------------------------
    def _block(self, export: Export) -> str:
        lines = [f"Target {export.iqn}"]
        if export.has_chap:
            lines.append(f"    IncomingUser {export.auth_username} {export.auth_password}")
        lines.append(f"    Lun {LUN} Path={export.path},Type={self._iotype(export.path)}")
        return "\n".join(lines) + "\n"

    def _edit_conf(self, iqn: str, block: str | None) -> None:
        path = Path(self.conf.iet_conf)
        if block is None and not path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with fileutils.locked(path.parent):
            old = _read(path)
            new = set_block(old, iqn, block)
            if new != old:
                fileutils.write_private_file(path, new)

    # -- helpers -------------------------------------------------------------
    def _ietadm(self, *args: str, tolerate: tuple[int, ...] = (),
                secrets: tuple[str, ...] = ()) -> int:
        """Run ietadm; its exit status when it is 0 or one of ``tolerate``."""
        try:
            self.execute("ietadm", *args, secrets=secrets)
        except exception.ProcessExecutionError as e:
            if e.kwargs.get("status") in tolerate:
                return e.kwargs["status"]
            raise
        return 0

    def _volumes(self) -> dict[str, LiveTarget]:
        return parse_volumes(_read(self.proc_volume))

    def _iotype(self, path: str) -> str:
        if self.conf.iscsi_iotype != "auto":
            return self.conf.iscsi_iotype
        try:
            return "blockio" if stat.S_ISBLK(os.stat(path).st_mode) else "fileio"
        except OSError:
            return "fileio"

    @staticmethod
    def _check_values(export: Export) -> None:
        # ietd.conf splits on blanks and ietadm's --params on commas.
        check_config_values(export, _IET_UNSAFE, "IET's configuration",
                            "without blanks or commas")

    def _error(self, action: str, export: Export, cause: str | Exception) -> exception.TargetError:
        return tool_error("ietadm", action, export, cause, conf_file=self.conf.iet_conf,
                          status_hints={EXIT_ECONNREFUSED: "Is ietd running?"})


def _read(path) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""


