"""The Target contract and the iSCSI export flow every helper shares.

A helper (tgt, LIO, IET, chiscsi) only says how to create, find and remove
one target; the rest -- IQNs, CHAP credentials, portals, the export record
and the ``connection_info`` the hypervisor side consumes -- lives here::

    target = registry.target_from_conf(CONF.target)
    export = target.create_export("4f1c...", "/srv/volumes/4f1c.img")
    target.initialize_connection("4f1c...", {"initiator": "iqn.1993-08.org.debian:01:ab"})
    {"driver_volume_type": "iscsi",
     "data": {"target_portal": "192.0.2.10:3260",
              "target_iqn": "iqn.2010-10.org.openstack:volume-4f1c...",
              "target_lun": 1, "target_discovered": False, "volume_id": "4f1c...",
              "auth_method": "CHAP", "auth_username": "...", "auth_password": "...",
              "encrypted": False, "access_mode": "rw"}}
"""

import abc
import logging
import os
import re
import secrets
import stat
import string
from collections.abc import Mapping

from hvplug import exception
from hvplug.target.export import Export, ExportStore, check_volume_id
from hvplug.utils import executor, fileutils, portals
from hvplug.utils.masking import redact

LOG = logging.getLogger(__name__)

_CHAP_ALPHABET = string.ascii_letters + string.digits
# RFC 3720 names: iqn.YYYY-MM.reversed.domain[:anything], eui.<16 hex>,
# naa.<16 or 32 hex>; ASCII only, at most 223 bytes.  Used with fullmatch.
_INITIATOR = re.compile(
    r"iqn\.\d{4}-\d{2}\.[A-Za-z0-9][A-Za-z0-9.-]*(?::[A-Za-z0-9.:_-]*)?"
    r"|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16}(?:[0-9A-Fa-f]{16})?")
_INITIATOR_MAX = 223


def check_initiator(name) -> str:
    """An initiator's iSCSI name (iqn./eui./naa.), checked before anything is granted."""
    if (not isinstance(name, str) or len(name) > _INITIATOR_MAX
            or not _INITIATOR.fullmatch(name)):
        raise exception.InvalidInput(
            reason=f"initiator {name!r} is not an iSCSI name: give its IQN as "
            "/etc/iscsi/initiatorname.iscsi has it (iqn.YYYY-MM.domain:name), or an "
            "eui./naa. name, at most 223 characters")
    return name


# -- what may be exported: one rule for every helper and the command line ------

def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def backing_roots(conf) -> list[str]:
    """``[target] backing_roots``, each resolved (symlinks followed); a
    relative entry would depend on the working directory, so it is refused."""
    relative = [root for root in conf.backing_roots if root and not os.path.isabs(root)]
    if relative:
        raise exception.ConfigFileError(
            reason=f"[target] backing_roots: {relative[0]!r} is not an absolute path; "
            "give each root as /absolute/dir")
    return [os.path.realpath(root) for root in conf.backing_roots if root]


def _own_state(conf, real: str) -> bool:
    """Whether ``real`` is a file hvplug or a target daemon writes for
    itself (records, stanzas, target files, saved configuration): they
    hold CHAP passwords."""
    if _inside(real, os.path.realpath(conf.exports_dir)):
        return True
    files = (conf.iet_conf, conf.chiscsi_conf, conf.lio_saveconfig, conf.tgtd_socket)
    if any(real == os.path.realpath(f) for f in files if f):
        return True
    volumes = os.path.realpath(conf.volumes_dir)
    if real == volumes or not _inside(real, volumes):
        return False
    name = os.path.basename(real)
    return (os.path.relpath(real, volumes).split(os.sep)[0] == "chiscsi"
            or name.startswith(".")
            or (name.startswith("volume-") and name.endswith(".conf")))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "of another kind"


def resolve_backing(conf, path, may_be_missing: bool = False) -> str:
    """The real path of ``path`` if it may be exported, else ``BackingPathRefused``.

    The rule: ``path`` is absolute, resolves (``os.path.realpath``, every
    symlink followed) inside one of ``[target] backing_roots``, is none of
    hvplug's own files, and is a regular file or a block device.  With
    ``may_be_missing`` a path that does not exist yet passes (the caller is
    about to create a file there).
    """
    roots = backing_roots(conf)

    def refuse(reason: str, fix: str) -> exception.BackingPathRefused:
        return exception.BackingPathRefused(
            path=repr(path), reason=reason, fix=fix,
            roots=", ".join(roots) if roots else "empty")

    if not isinstance(path, str) or not path or "\x00" in path:
        raise refuse("it is empty or holds a NUL byte", "Give the volume's path.")
    if not os.path.isabs(path):
        raise refuse("it is not an absolute path", "Give the absolute path.")
    real = os.path.realpath(path)
    it = "it" if real == path else f"it resolves to {real!r}, which"
    if not any(_inside(real, root) for root in roots):
        raise refuse(f"{it} is outside every backing root",
                     "Put the volume under one of them, or add its directory to "
                     "[target] backing_roots.")
    if _own_state(conf, real):
        raise refuse(f"{it} is one of hvplug's own files (export records and target "
                     "configuration hold CHAP passwords)",
                     "Give a volume's file or block device.")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        if may_be_missing:
            return real
        raise refuse(f"{it} does not exist",
                     "Create the file or device first, or give --size to create a "
                     "sparse file.") from None
    except OSError as exc:
        raise refuse(f"{it} cannot be examined ({exc.strerror})",
                     "Check the path and its permissions.") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise refuse(f"{it} is {_kind(st.st_mode)}, not a regular file or a block device",
                     "Give a volume's file or block device.")
    return real


def random_chap(length: int) -> str:
    """A CHAP user or password from the OS's cryptographic RNG."""
    return "".join(secrets.choice(_CHAP_ALPHABET) for _ in range(length))


def iser_enabled(conf) -> bool:
    """``enable_iser``, Cinder's ``iscsi_protocol = iser``, or the old iseradm."""
    return bool(conf.enable_iser or conf.iscsi_protocol == "iser"
                or conf.iscsi_helper == "iseradm")


def check_config_values(export: Export, unsafe: "re.Pattern[str]", where: str,
                        rule: str) -> None:
    """Refuse export values a helper's config syntax would mangle or let inject.

    Checks the backing path and, when the export uses CHAP, the user and
    password (the password never shown).  ``where`` names the syntax ("a tgt stanza"), ``rule`` says what
    is allowed.
    """
    values: dict[str, str | None] = {"backing store path": export.path}
    if export.auth_method == "CHAP":  # an empty user or password is refused, not dropped
        values.update({"CHAP user name": export.auth_username,
                       "CHAP password": export.auth_password})
    for name, value in values.items():
        if not value or unsafe.search(value):
            shown = "" if name == "CHAP password" else f" {value!r}"
            raise exception.InvalidInput(
                reason=f"{name}{shown} cannot go into {where}: it must be non-empty, {rule}")


def tool_error(tool: str, action: str, export: Export, cause: str | Exception,
               conf_file: str | None = None,
               status_hints: Mapping[int, str] | None = None) -> exception.TargetError:
    """The ``TargetError`` of ``action`` on ``export`` done with ``tool``
    (``ietadm``, ``iscsictl``), its CHAP password masked.

    ``cause`` is a message or what was raised: a ``TargetError`` gives its
    reason; a ``ProcessExecutionError`` its message, followed by
    ``status_hints[<its exit status>]`` when there is one; an ``OSError``
    its reason and file (``conf_file`` when it names none).
    """
    if isinstance(cause, exception.TargetError):
        reason = cause.kwargs.get("reason", cause.message)
    elif isinstance(cause, exception.ProcessExecutionError):
        reason = cause.message
        hints, status = status_hints or {}, cause.kwargs.get("status")
        if isinstance(status, int) and status in hints:
            reason += f" {hints[status]}"
    elif isinstance(cause, OSError):
        reason = f"{cause.strerror or cause} ({cause.filename or conf_file})"
    else:
        reason = str(cause)
    return exception.TargetError(helper=tool, action=action, iqn=export.iqn,
                                 reason=redact(reason, [export.auth_password or ""]))


class Target(abc.ABC):
    """Export volumes and hand out the ``connection_info`` for them."""

    @abc.abstractmethod
    def create_export(self, volume_id: str, path: str) -> Export:
        """Export ``path`` as volume ``volume_id``; idempotent."""

    @abc.abstractmethod
    def ensure_export(self, volume_id: str) -> Export:
        """Re-create the export from its record if the daemon lost it."""

    @abc.abstractmethod
    def remove_export(self, volume_id: str) -> None:
        """Tear the export down; a target already gone is fine."""

    @abc.abstractmethod
    def initialize_connection(self, volume_id: str, connector: dict) -> dict:
        """The ``connection_info`` for ``connector`` (``{"initiator": IQN, ...}``)."""

    @abc.abstractmethod
    def terminate_connection(self, volume_id: str, connector: dict) -> None:
        """Revoke what ``initialize_connection`` granted ``connector``."""


class ISCSITargetHelper(Target):
    """The shared iSCSI flow; subclasses implement the ``_target_*`` hooks."""

    helper_name = ""
    supports_iser = False

    def __init__(self, conf, execute=None, store: ExportStore | None = None,
                 iser: bool | None = None):
        self.conf = conf
        self.execute = execute or executor.execute
        self.store = store or ExportStore(conf.exports_dir)
        self.iser = iser_enabled(conf) if iser is None else iser
        if self.iser and not self.supports_iser:
            raise exception.InvalidInput(
                reason=f"enable_iser is set but the {self.helper_name} helper cannot "
                "export over iSER; use tgtadm or lioadm, or turn enable_iser off")

    # -- the hooks a helper implements ---------------------------------------
    @abc.abstractmethod
    def _target_create(self, export: Export) -> int | None:
        """Create the live target, LUN and CHAP account and persist its config.

        Returns the tid (where the daemon has one).  Must leave nothing
        behind when it fails.
        """

    @abc.abstractmethod
    def _target_exists(self, export: Export) -> bool:
        """Whether the daemon serves ``export`` right now."""

    @abc.abstractmethod
    def _target_remove(self, export: Export) -> None:
        """Remove the live target and its persisted config; tolerate absence."""

    def _grant(self, export: Export, initiator: str) -> None:
        """Admit ``initiator`` (per-initiator ACLs, e.g. LIO); default: no-op."""

    def _revoke(self, export: Export, initiator: str) -> None:
        """Undo ``_grant``; default: no-op."""

    def _check_values(self, export: Export) -> None:
        """Refuse values the helper's configuration syntax cannot carry; default: none.

        Runs before anything is created (``check_new_export``), and the
        helpers run it again in ``_target_create``.
        """

    # -- the shared flow -----------------------------------------------------
    @property
    def driver_volume_type(self) -> str:
        return "iser" if self.iser else "iscsi"

    def iqn(self, volume_id: str) -> str:
        """Prefix + ``volume-<id>``, lower-cased: iSCSI names compare without
        case, and LIO and chiscsi store them lower-cased."""
        return f"{self.conf.iscsi_target_prefix}volume-{volume_id}".lower()

    def portals(self) -> list[str]:
        """``ip:port`` of every address, IPv6 bracketed, primary first."""
        addresses = [self.conf.iscsi_ip_address, *self.conf.iscsi_secondary_ip_addresses]
        return [portals.format_portal(a.strip("[]"), self.conf.iscsi_port)
                for a in addresses if a]

    def new_export(self, volume_id: str, path: str) -> Export:
        """A record for a new export, with fresh CHAP credentials."""
        return Export(volume_id=volume_id, path=path, iqn=self.iqn(volume_id),
                      helper=self.helper_name, portals=self.portals(),
                      auth_username=random_chap(20), auth_password=random_chap(16),
                      iser=self.iser)

    def export(self, volume_id: str) -> Export:
        found = self.store.load(check_volume_id(volume_id))
        if found is None:
            raise exception.ExportNotFound(volume_id=volume_id)
        return found

    def check_backing(self, path, may_be_missing: bool = False) -> str:
        """``resolve_backing`` with this helper's options."""
        return resolve_backing(self.conf, path, may_be_missing)

    def check_new_export(self, volume_id: str, path, may_be_missing: bool = False) -> str:
        """What ``create_export`` would refuse, checked before anything exists.

        The command line calls this before it creates a backing file.
        Returns the resolved path: the one to create, and to export.
        """
        check_volume_id(volume_id)
        real = self.check_backing(path, may_be_missing)
        existing = self.store.load(volume_id)
        if existing is None:
            self._check_case_twin(volume_id)
        else:
            self._check_same_path(existing, real)
        probe = Export(volume_id=volume_id, path=real, iqn=self.iqn(volume_id),
                       helper=self.helper_name, portals=self.portals(),
                       auth_username="probe", auth_password="probe",  # noqa: S106 - a dummy
                       iser=self.iser)
        self._check_values(probe)
        return real

    def _check_case_twin(self, volume_id: str) -> None:
        """Two volume ids that differ only in case would share one IQN."""
        twin = self.store.case_twin(volume_id)
        if twin is not None:
            raise exception.VolumeIdCaseCollision(
                volume_id=repr(volume_id), other=repr(twin),
                record=repr(str(self.store.record_path(twin))), iqn=self.iqn(volume_id))

    def _check_same_path(self, export: Export, path: str) -> None:
        if export.path != path:
            raise exception.IqnInUse(
                iqn=export.iqn, other_path=repr(export.path), path=repr(path),
                owner=f"the recorded export of volume {export.volume_id!r}",
                fix="Remove that export first ('hvplug target remove-export --volume-id "
                    f"{export.volume_id}'), or export this file under another volume id.")

    def check_restorable(self, export: Export) -> None:
        """A recorded export is re-created only if its path still passes the
        rule and still resolves to itself (no symlink swapped in since)."""
        real = self.check_backing(export.path)
        if real != export.path:
            raise exception.BackingPathRefused(
                path=repr(export.path), roots=", ".join(backing_roots(self.conf)),
                reason=f"it now resolves to {real!r}: a symlink replaced it after it "
                       "was exported",
                fix="Put the volume back at its recorded path, or remove this export "
                    "and create it again.")

    def create_export(self, volume_id: str, path: str) -> Export:
        check_volume_id(volume_id)
        real = self.check_backing(path)
        # Record and target change together: two creates of one volume must
        # not interleave (the helpers' own locks cover only their daemon).
        with fileutils.locked(fileutils.private_dir(self.store.directory)):
            return self._create_export(volume_id, real)

    def _create_export(self, volume_id: str, path: str) -> Export:
        export = self.store.load(volume_id)
        if export is not None:
            self._check_same_path(export, path)
            if self._target_exists(export):
                return export
        else:
            self._check_case_twin(volume_id)
            export = self.new_export(volume_id, path)
        export.tid = self._target_create(export)
        self.store.save(export)
        LOG.info("exported %s as %s (tid %s)", path, export.iqn, export.tid)
        return export

    def _recreate(self, export: Export) -> None:
        """Build ``export``'s target again from its record; save the new tid."""
        self.check_restorable(export)
        LOG.warning("target %s is missing; re-creating it", export.iqn)
        export.tid = self._target_create(export)
        self.store.save(export)

    def ensure_export(self, volume_id: str) -> Export:
        export = self.export(volume_id)
        if not self._target_exists(export):
            self._recreate(export)
        return export

    def restore_exports(self, exports: list[Export]
                        ) -> tuple[list[Export], list[tuple[Export, exception.HvplugError]]]:
        """``ensure_export`` for each of ``exports``, each on its own.

        Returns the restored exports and ``(export, error)`` for each that
        failed: one failure never stops the others.
        """
        done, failed = [], []
        for export in exports:
            try:
                done.append(self.ensure_export(export.volume_id))
            except exception.HvplugError as exc:
                LOG.error("could not restore %s: %s", export.iqn, exc.message)
                failed.append((export, exc))
        return done, failed

    def ensure_exports(self) -> list[Export]:
        """Restore every readable recorded export of this helper.

        All are tried; if any failed, ``TargetError`` names them afterwards.
        """
        exports = [e for e in self.store.all() if e.helper == self.helper_name]
        done, failed = self.restore_exports(exports)
        if failed:
            raise exception.TargetError(
                helper=self.helper_name, action="restore",
                iqn=", ".join(e.iqn for e, _ in failed),
                reason=f"{len(failed)} of {len(exports)} exports failed; "
                       f"first: {failed[0][1].message}")
        return done

    def remove_export(self, volume_id: str) -> None:
        check_volume_id(volume_id)
        with fileutils.locked(fileutils.private_dir(self.store.directory)):
            export = self.store.load(volume_id)
            if export is None:
                raise exception.ExportNotFound(volume_id=volume_id)
            self._target_remove(export)
            self.store.remove(volume_id)

    def initialize_connection(self, volume_id: str, connector: dict | None = None) -> dict:
        """Grant ``connector["initiator"]`` (when given) access to the export and
        return its ``connection_info``, e.g. (tgt and LIO alike)::

            {"driver_volume_type": "iscsi",
             "data": {"target_portal": "192.0.2.10:3260",
                      "target_iqn": "iqn.2010-10.org.openstack:volume-4f1c...",
                      "target_lun": 1, "target_discovered": False,
                      "volume_id": "4f1c...", "auth_method": "CHAP",
                      "auth_username": "...", "auth_password": "...",
                      "encrypted": False, "access_mode": "rw"},
             "serial": "4f1c..."}

        With ``connector["multipath"]``, or an export on several portals, the
        data also lists ``target_portals``, ``target_iqns`` and ``target_luns``.
        """
        connector = connector or {}
        export = self.export(volume_id)
        initiator = connector.get("initiator")
        if initiator:
            check_initiator(initiator)
        if initiator and initiator not in export.initiators:
            self._grant(export, initiator)
            export.initiators.append(initiator)
            self.store.save(export)
        return {"driver_volume_type": self.driver_volume_type,
                "data": self.connection_data(export, bool(connector.get("multipath"))),
                "serial": export.volume_id}

    def connection_data(self, export: Export, multipath: bool = False) -> dict:
        data = {"target_discovered": False, "target_portal": export.portals[0],
                "target_iqn": export.iqn, "target_lun": int(export.lun),
                "volume_id": export.volume_id, "encrypted": False, "access_mode": "rw"}
        if export.auth_method == "CHAP":
            data.update(auth_method="CHAP", auth_username=export.auth_username,
                        auth_password=export.auth_password)
        if multipath or len(export.portals) > 1:
            count = len(export.portals)
            data.update(target_portals=list(export.portals),
                        target_iqns=[export.iqn] * count,
                        target_luns=[int(export.lun)] * count)
        return data

    def terminate_connection(self, volume_id: str, connector: dict | None = None) -> None:
        export = self.export(volume_id)
        initiator = (connector or {}).get("initiator")
        if initiator and initiator in export.initiators:
            self._revoke(export, initiator)
            export.initiators.remove(initiator)
            self.store.save(export)
