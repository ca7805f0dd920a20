"""The LIO helper: exports through the kernel's LIO target, driven by rtslib-fb.

One export is these LIO objects (what ``targetcli ls`` shows)::

    /backstores/fileio/volume-<id>    (block/ when the path is a block device)
    /iscsi/<iqn>/tpg1                 authentication=1, enabled
        luns/lun1 -> the storage object
        portals/<ip>:<port>           one per portal, iSER on each with enable_iser
        acls/<initiator>              one per initiator_connection: CHAP, mapped LUN 1

Every change is saved with rtslib's ``save_to_file`` to ``lio_saveconfig``
(0600: it holds the CHAP passwords), the file target.service restores at
boot.  rtslib-fb is imported only when a method runs, so a host using tgt
never loads it.  doc/lio.md has the details and how to check a real host.
"""

import contextlib
import logging
import os
import stat
from pathlib import Path

from hvplug import exception
from hvplug.target.base import ISCSITargetHelper
from hvplug.target.export import Export
from hvplug.utils import fileutils, masking, portals

LOG = logging.getLogger(__name__)

# LIO has no tid; the TPG tag is what iSCSI puts after the comma in
# "ip:port,TPGT iqn", where provider_location has the tid.
TPG_TAG = 1
# The kernel splits fileio's control string at ',' and rtslib parses 'info'
# at ':' and blanks: a path with any of them would be misread.
_UNSAFE_PATH_CHARS = ",: \t\n"
_IQN_TYPES = ("iqn", "naa", "eui")
# rtslib's configfs access is not safe against concurrent changes: threads
# take this lock, processes the file lock beside the export records.


def _rtslib():
    try:
        import rtslib_fb
    except ImportError as e:
        raise exception.RtslibMissing(reason=str(e)) from e
    return rtslib_fb


class LioAdm(ISCSITargetHelper):
    """Export volumes with LIO (``initialize_connection``: see
    :meth:`ISCSITargetHelper.initialize_connection`).

    LIO admits only initiators with an ACL, so ``initialize_connection``
    needs the connector's ``initiator``.
    """

    helper_name = "lioadm"
    supports_iser = True

    # -- the hooks -------------------------------------------------------------
    def _target_create(self, export: Export) -> int:
        self._check_export(export)
        with self._configfs(export, "create") as (rtslib, root):
            if self._serving(rtslib, export):  # restored from the saved config
                export.iser = self.iser
                return TPG_TAG
            self._refuse_foreign(rtslib, export)
            self._drop(rtslib, root, export, stale=True)
            made: list = []
            try:
                self._build(rtslib, export, made)
                self._save(root)
            except BaseException:
                self._undo(rtslib, made)
                raise
        export.iser = self.iser
        LOG.info("LIO target %s serves %s on %s%s", export.iqn, export.path,
                 ", ".join(export.portals), " over iSER" if self.iser else "")
        return TPG_TAG

    def _target_exists(self, export: Export) -> bool:
        with self._configfs(export, "look up", restore=False) as (rtslib, _root):
            return self._serving(rtslib, export)

    def _target_remove(self, export: Export) -> None:
        with self._configfs(export, "remove") as (rtslib, root):
            self._drop(rtslib, root, export)
            self._save(root)
        LOG.info("LIO target %s removed", export.iqn)

    def _grant(self, export: Export, initiator: str) -> None:
        self._check_initiator(initiator)
        with self._configfs(export, f"grant {initiator} access to") as (rtslib, root):
            tpg = self._tpg(rtslib, export)
            existed = self._acl(rtslib, tpg, initiator) is not None
            try:
                self._admit(rtslib, tpg, export, initiator)
                self._save(root)
            except BaseException:
                acl = None if existed else self._acl(rtslib, tpg, initiator)
                if acl is not None:
                    with contextlib.suppress(rtslib.RTSLibError, OSError):
                        acl.delete()
                raise
        LOG.info("LIO target %s admits %s", export.iqn, initiator)

    def _revoke(self, export: Export, initiator: str) -> None:
        with self._configfs(export, f"revoke {initiator} from") as (rtslib, root):
            try:
                acl = self._acl(rtslib, self._tpg(rtslib, export), initiator)
            except exception.TargetError:
                acl = None  # no target, so no ACL either
            if acl is not None:
                acl.delete()
                self._save(root)
        LOG.info("LIO target %s no longer admits %s", export.iqn, initiator)

    # -- building and finding the objects --------------------------------------
    def _build(self, rtslib, export: Export, made: list) -> None:
        """Storage object, target, TPG, LUN, portals, ACLs; ``made`` for undo."""
        made.append(self._storage_object(rtslib, export))
        target = rtslib.Target(rtslib.FabricModule("iscsi"), export.iqn, mode="create")
        made.append(target)
        tpg = rtslib.TPG(target, TPG_TAG, mode="create")
        tpg.set_attribute("authentication", "1" if export.auth_method == "CHAP" else "0")
        rtslib.LUN(tpg, export.lun, storage_object=made[0])
        for portal in export.portals:
            self._add_portal(rtslib, tpg, portal)
        for initiator in export.initiators:
            self._admit(rtslib, tpg, export, initiator)
        tpg.enable = True

    def _storage_object(self, rtslib, export: Export):
        if stat.S_ISBLK(os.stat(export.path).st_mode):
            return rtslib.BlockStorageObject(export.name, dev=export.path)
        return rtslib.FileIOStorageObject(export.name, dev=export.path,
                                          size=os.path.getsize(export.path))

    def _add_portal(self, rtslib, tpg, portal: str) -> None:
        host, port = portals.parse_portal(portal)
        np = rtslib.NetworkPortal(tpg, f"[{host}]" if ":" in host else host, port,
                                  mode="create")
        if not self.iser:
            return
        try:
            np.iser = True
        except rtslib.RTSLibError as e:
            raise exception.IserUnavailable(
                reason=f"the kernel refused iSER on portal {portal} ({e}): is "
                "ib_isert loaded and an RDMA device on that address?") from e
        if not np.iser:  # rtslib says nothing when the attribute is missing
            raise exception.IserUnavailable(
                reason=f"this kernel's LIO has no iSER switch on portal {portal}")

    def _admit(self, rtslib, tpg, export: Export, initiator: str) -> None:
        acl = rtslib.NodeACL(tpg, initiator)
        if export.auth_method == "CHAP":
            acl.chap_userid = export.auth_username
            acl.chap_password = export.auth_password
        if not any(m.mapped_lun == export.lun for m in acl.mapped_luns):
            rtslib.MappedLUN(acl, export.lun, tpg_lun=export.lun)

    def _serving(self, rtslib, export: Export) -> bool:
        """The target is there as the record and the options say."""
        try:
            tpg = rtslib.TPG(self._target(rtslib, export), TPG_TAG, mode="lookup")
            so = rtslib.LUN(tpg, export.lun).storage_object
            nps = {f"{np.ip_address}:{np.port}": np.iser for np in tpg.network_portals}
            complete = (so.name == export.name and so.udev_path == export.path
                        and tpg.enable)
        except rtslib.RTSLibError:
            return False
        return (complete and set(nps) == set(export.portals)
                and all(iser == self.iser for iser in nps.values()))

    def _refuse_foreign(self, rtslib, export: Export) -> None:
        """A target of this IQN whose LUN serves another file is another
        volume's: ``IqnInUse``, never dropped and rebuilt."""
        try:
            tpg = rtslib.TPG(self._target(rtslib, export), TPG_TAG, mode="lookup")
            other = rtslib.LUN(tpg, export.lun).storage_object.udev_path
        except rtslib.RTSLibError:
            return  # no such target, or one without that LUN: incomplete, ours to redo
        if other and other != export.path:
            raise exception.IqnInUse(
                iqn=export.iqn, other_path=repr(other), path=repr(export.path),
                owner="an LIO target",
                fix="If that target is stale, remove it ('hvplug target remove-export' "
                    f"for its volume, or 'targetcli /iscsi delete {export.iqn}'); "
                    "otherwise pick another volume id.")

    def _target(self, rtslib, export: Export):
        return rtslib.Target(rtslib.FabricModule("iscsi"), export.iqn, mode="lookup")

    def _tpg(self, rtslib, export: Export):
        try:
            return rtslib.TPG(self._target(rtslib, export), TPG_TAG, mode="lookup")
        except rtslib.RTSLibNotInCFSError:
            raise exception.TargetError(
                helper=self.helper_name, action="find", iqn=export.iqn,
                reason="it is not in the kernel; run 'hvplug target ensure-exports'"
            ) from None

    def _acl(self, rtslib, tpg, initiator: str):
        try:
            return rtslib.NodeACL(tpg, initiator, mode="lookup")
        except rtslib.RTSLibNotInCFSError:
            return None

    def _drop(self, rtslib, root, export: Export, stale: bool = False) -> None:
        """Delete the target and storage object of ``export``, if there."""
        found = []
        with contextlib.suppress(rtslib.RTSLibNotInCFSError):
            found.append(self._target(rtslib, export))
        found += [so for so in list(root.storage_objects) if so.name == export.name]
        if found and stale:
            LOG.warning("replacing an incomplete LIO export of %s: %s", export.iqn,
                        ", ".join(map(repr, found)))
        for obj in found:
            obj.delete()

    def _undo(self, rtslib, made: list) -> None:
        for obj in reversed(made):
            try:
                obj.delete()
            except (rtslib.RTSLibError, OSError) as e:  # the first error is what counts
                LOG.warning("could not remove %r after a failed export: %s", obj, e)

    # -- checks ----------------------------------------------------------------
    def _check_values(self, export: Export) -> None:
        if any(c in export.path for c in _UNSAFE_PATH_CHARS):
            raise exception.InvalidInput(
                reason=f"LIO cannot export {export.path!r}: its path has ',', ':' or blanks")
        if self._normalized(export.iqn) != export.iqn:
            raise exception.InvalidInput(
                reason=f"LIO needs a lowercase IQN without '_'; volume "
                f"{export.volume_id} would be {export.iqn}")

    def _check_export(self, export: Export) -> None:
        path = export.path
        self._check_values(export)
        try:
            st = os.stat(path)
        except OSError as e:
            raise exception.TargetError(helper=self.helper_name, action="create",
                                        iqn=export.iqn, reason=f"{path}: {e.strerror}") from e
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            raise exception.InvalidInput(
                reason=f"{path} is empty; give it a size (create-export --size 10G)")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise exception.InvalidInput(
                reason=f"{path} is neither a regular file nor a block device")

    def _check_initiator(self, initiator: str) -> None:
        if self._normalized(initiator) is None:
            raise exception.InvalidInput(
                reason=f"initiator {initiator!r} is not an iSCSI name (iqn./eui./naa.)")

    def _normalized(self, name: str) -> str | None:
        rtslib = _rtslib()
        try:
            return rtslib.utils.normalize_wwn(_IQN_TYPES, name)[0]
        except rtslib.RTSLibError:
            return None

    # -- configfs access, saving, restoring --------------------------------------
    @contextlib.contextmanager
    def _configfs(self, export: Export, action: str, restore: bool = True):
        """rtslib and its root under the locks; rtslib errors become TargetError."""
        rtslib = _rtslib()
        # configfs access races (rtslib): one writer per host at a time.
        with fileutils.locked(Path(self.conf.exports_dir) / ".lioadm.lock"):
            try:
                root = rtslib.RTSRoot()
            except (rtslib.RTSLibError, OSError) as e:  # OSError: no /proc/modules, no configfs
                raise exception.TargetError(
                    helper=self.helper_name, action=action, iqn=export.iqn,
                    reason=f"LIO is not available on this host ({e}); load it with "
                    "'modprobe target_core_mod iscsi_target_mod'") from e
            try:
                root.invalidate_caches()  # another process may have changed configfs
                if restore:
                    self._restore_if_lost(rtslib, root)
                yield rtslib, root
            except (rtslib.RTSLibError, OSError, RuntimeError) as e:
                raise exception.TargetError(
                    helper=self.helper_name, action=action, iqn=export.iqn,
                    reason=masking.redact(str(e), [export.auth_password or ""])) from e

    def _save(self, root) -> None:
        """The whole LIO configuration to ``lio_saveconfig``, mode 0600."""
        path = Path(self.conf.lio_saveconfig)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        umask = os.umask(0o077)  # rtslib changes it and restores it only on success
        try:
            root.save_to_file(str(path))
        finally:
            os.umask(umask)
        os.chmod(path, 0o600)

    def _restore_if_lost(self, rtslib, root) -> None:
        """Reload the saved configuration into a kernel that has none.

        After a target-service restart without a restore, or a reboot before
        target.service ran, LIO is empty.  Reloading the file brings every
        export back with its ACLs at once; and it must happen before the next
        save, which would otherwise overwrite the file with only what this
        call creates.  Exports the file lacks are re-created from their records.
        """
        path = Path(self.conf.lio_saveconfig)
        if not path.is_file() or any(root.targets) or any(root.storage_objects):
            return
        try:
            errors = root.restore_from_file(str(path), clear_existing=False)
        except (ValueError, OSError, rtslib.RTSLibError) as e:
            aside = path.with_name(path.name + ".unreadable")
            os.replace(path, aside)
            LOG.error("could not restore LIO from %s (%s); moved it to %s and "
                      "re-creating exports from their records", path, e, aside)
            return
        LOG.warning("LIO had no configuration (target service restarted?); "
                    "restored it from %s", path)
        secrets = [e.auth_password for e in self.store.all() if e.auth_password]
        for error in errors:
            LOG.warning("restoring %s: %s", path, masking.redact(error, secrets))
