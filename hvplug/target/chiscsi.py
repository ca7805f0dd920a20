"""Chelsio's chiscsi target, driven with ``iscsictl``; one target file per volume.

chiscsi is a drop-in for IET (the first TargetDevice is LUN 0) whose PDU
offload needs nothing from the initiator.  An export's ``connection_info``::

    {"driver_volume_type": "iscsi",
     "data": {"target_portal": "192.0.2.10:3260",
              "target_iqn": "iqn.2010-10.org.openstack:volume-4f1c...",
              "target_lun": 0, "target_discovered": False, "volume_id": "4f1c...",
              "auth_method": "CHAP", "auth_username": "...", "auth_password": "...",
              "encrypted": False, "access_mode": "rw"}}

Each volume gets ``<volumes_dir>/chiscsi/<volume name>`` (template
``xml_templates/chiscsi_target.conf``, mode 0600: it holds the CHAP
password), started with ``iscsictl -S target=IQN -f FILE -x CHISCSI_CONF``.
The global chiscsi.conf is only passed along, never edited.  iscsictl
answers "NOT found" / "is not found" for an unknown target and reloads a
running one on ``-S``; doc/iet-chiscsi.md lists what each answer means.
"""

import logging
import re
import threading
import time
from pathlib import Path

from hvplug import exception, templates
from hvplug.target.base import ISCSITargetHelper, check_config_values, tool_error
from hvplug.target.export import Export
from hvplug.utils import fileutils

_CHISCSI_UNSAFE = re.compile(r'[#"\n\r]')
LOG = logging.getLogger(__name__)

LUN = 0
NOT_FOUND = "NOT found"  # -c target=NAME, on stdout
STOP_NOT_FOUND = "is not found"  # -s target=NAME, on stderr
ALREADY_RUNNING = "iscsictl already running"  # another iscsictl holds its lock
_LOCK_ATTEMPTS = 5
_LOCK_WAIT = 0.2  # seconds
_LOCK = threading.Lock()  # iscsictl refuses to run twice at once: queue ours
_TARGET_LINE = re.compile(r"^TARGET:\s*([^,\s]+),\s*id=(\d+),", re.MULTILINE)


def parse_target_ids(text: str) -> dict[str, int]:
    """``iscsictl -c target=ALL``: ``{name: id}`` from ``TARGET: <iqn>, id=N, ...``."""
    return {m[1].lower(): int(m[2]) for m in _TARGET_LINE.finditer(text)}


class ChiscsiAdm(ISCSITargetHelper):
    """Exports through chiscsi: a target file per volume, started by iscsictl."""

    helper_name = "chiscsi"
    supports_iser = False

    def new_export(self, volume_id: str, path: str) -> Export:
        export = super().new_export(volume_id, path)
        export.lun = LUN  # the first TargetDevice is LUN 0 (Cinder's CxtAdm used 0)
        return export

    def target_file(self, export: Export) -> Path:
        return Path(self.conf.volumes_dir) / "chiscsi" / export.name

    # -- the hooks -----------------------------------------------------------
    def _target_create(self, export: Export) -> int:
        path = self.target_file(export)
        text = self.render(export)
        previous = path.read_text() if path.exists() else None
        started = False
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fileutils.write_private_file(path, text)
            self._iscsictl(export, "-S", f"target={export.iqn}", "-f", str(path),
                           "-x", self.conf.chiscsi_conf)
            started = True
            tid = self._target_ids(export).get(export.iqn)
            if tid is None:
                raise exception.TargetError(
                    helper="iscsictl", action="create", iqn=export.iqn,
                    reason="iscsictl -S succeeded but 'iscsictl -c target=ALL' does not "
                    "list the target; check the kernel log (dmesg) for chiscsi's reason")
        except (exception.ProcessExecutionError, exception.TargetError, OSError) as e:
            if started:
                self._stop_quietly(export)
            self._restore(path, previous)
            raise self._error("create", export, e) from None
        return tid

    def _target_exists(self, export: Export) -> bool:
        try:
            # stdout is the detail view, CHAP secret included: never log it
            self._iscsictl(export, "-c", f"target={export.iqn}")
        except exception.ProcessExecutionError as e:
            if NOT_FOUND in (e.kwargs.get("stdout") or ""):
                return False
            raise self._error("check", export, e) from None
        return True

    def _target_remove(self, export: Export) -> None:
        if self._target_exists(export):
            try:
                _, err = self._iscsictl(export, "-s", f"target={export.iqn}")
            except exception.ProcessExecutionError as e:
                if STOP_NOT_FOUND not in e.stderr:  # else: gone since the check
                    raise self._error("remove", export, e) from None
                err = ""
            if f"{export.iqn} busy" in err:  # chiscsi's answer, with exit status 0
                raise self._error("remove", export, (
                    "initiators stayed logged in for chiscsi's 30 s wait, so the target "
                    "is still running; log them out (or drop their sessions with "
                    "'iscsictl -D') and retry"))
        self.target_file(export).unlink(missing_ok=True)

    # -- helpers -------------------------------------------------------------
    def render(self, export: Export) -> str:
        """The target file for ``export`` (no CHAP lines when it has no CHAP)."""
        self._check_values(export)
        auth = ""
        if export.has_chap:
            auth = ("        AuthMethod=CHAP\n        Auth_CHAP_Policy=Oneway\n"
                    f'        Auth_CHAP_Initiator="{export.auth_username}":'
                    f'"{export.auth_password}"')
        groups = "\n".join(f"        PortalGroup={tag}@{portal}"
                           for tag, portal in enumerate(export.portals, start=1))
        text = templates.render("chiscsi_target.conf", volume_id=export.volume_id,
                                iqn=export.iqn, path=export.path,
                                portal_groups=groups, auth=auth)
        return "".join(line for line in text.splitlines(keepends=True) if line.strip())

    def _iscsictl(self, export: Export, *args: str) -> tuple[str, str]:
        """Run iscsictl, one at a time; wait out another iscsictl's lock."""
        secrets = (export.auth_password,) if export.auth_password else ()
        attempt = 1
        with _LOCK:
            while True:
                try:
                    return self.execute("iscsictl", *args, secrets=secrets)
                except exception.ProcessExecutionError as e:
                    if ALREADY_RUNNING not in e.stderr or attempt >= _LOCK_ATTEMPTS:
                        raise
                LOG.debug("another iscsictl is running; retrying %s", args[0])
                attempt += 1
                time.sleep(_LOCK_WAIT)

    def _target_ids(self, export: Export) -> dict[str, int]:
        out, _ = self._iscsictl(export, "-c", "target=ALL")
        return parse_target_ids(out)

    def _stop_quietly(self, export: Export) -> None:
        try:
            self._iscsictl(export, "-s", f"target={export.iqn}")
        except exception.ProcessExecutionError as e:
            LOG.warning("could not stop %s again: %s", export.iqn, e.stderr)

    @staticmethod
    def _restore(path: Path, previous: str | None) -> None:
        try:
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                fileutils.write_private_file(path, previous)
        except OSError as e:
            LOG.warning("could not restore %s: %s", path, e.strerror)

    @staticmethod
    def _check_values(export: Export) -> None:
        # iscsictl cuts lines at '#' and CHAP values at '"'.
        check_config_values(export, _CHISCSI_UNSAFE, "a chiscsi target file",
                            "without '#', '\"' or line breaks")

    def _error(self, action: str, export: Export, cause: str | Exception) -> exception.TargetError:
        return tool_error("iscsictl", action, export, cause)
