"""Host-attached iSCSI: open-iscsi logs in, the guest gets the block device.

The host logs in through an open-iscsi iface (``[libvirt] iscsi_iface``:
software TCP, iSER, or an offload HBA such as ``cxgb4i.00:07:43:28:b2:58``)
and the guest gets ``<disk type='block'>`` on the stable
``/dev/disk/by-path/...`` link, or on the multipath device over all portals.
iscsiadm is driven directly (hvplug.initiator.iscsiadm), not through
os-brick: doc/host-iscsi.md says why.

Example ``connection_info``::

    {"driver_volume_type": "iscsi",
     "data": {"target_portal": "192.0.2.10:3260",
              "target_iqn": "iqn.2010-10.org.openstack:volume-42",
              "target_lun": 1, "target_discovered": false,
              "auth_method": "CHAP", "auth_username": "u", "auth_password": "p",
              "auth_username_in": "t", "auth_password_in": "q",
              "target_portals": ["192.0.2.10:3260", "192.0.2.11:3260"],
              "target_iqns": ["iqn...:volume-42", "iqn...:volume-42"],
              "target_luns": [1, 1]},
     "serial": "42"}

``connect_volume`` records what it chose in ``data``: ``iface``,
``device_path``, ``multipath`` and ``sessions`` (one entry per logged-in
portal: portal, iqn, lun, sid, transport, device).
"""

import logging
import time
from pathlib import Path

from hvplug import connection_schema, exception
from hvplug.conf import CONF
from hvplug.initiator.devices import Devices, attached_luns, lun_key
from hvplug.initiator.iface import IfaceManager
from hvplug.initiator.iscsiadm import (
    LOGIN_AUTH_FAILED,
    NO_RECORDS,
    NODES_DIR,
    SESSION_EXISTS,
    Iscsiadm,
    NodeRecords,
    Session,
)
from hvplug.utils import fileutils
from hvplug.virt import config
from hvplug.virt.volume.base import LibvirtBaseBlockVolumeDriver, require
from hvplug.virt.volume.net import ISCSITarget, chap_credentials, iscsi_targets

LOG = logging.getLogger(__name__)

DEFAULT_IFACE = "default"
_MAX_SCAN_WAIT = 8.0  # seconds between rescans: 1, 2, 4, 8, 8...


def auth_settings(data: dict) -> dict[str, str] | None:
    """The node record's CHAP settings for ``data``; mutual with ``auth_username_in``."""
    credentials = chap_credentials(data)
    if credentials is None:
        return None
    settings = {"node.session.auth.authmethod": "CHAP",
                "node.session.auth.username": credentials[0],
                "node.session.auth.password": credentials[1]}
    if data.get("auth_username_in") or data.get("auth_password_in"):
        settings["node.session.auth.username_in"] = require(data, "auth_username_in")
        settings["node.session.auth.password_in"] = require(data, "auth_password_in")
    return settings


def _secrets(settings: dict[str, str] | None) -> tuple[str, ...]:
    return tuple(v for k, v in (settings or {}).items() if "password" in k)


def _transport_of(iface: str) -> str:
    """The transport an iface name implies: offload records are ``<transport>.<hw>``."""
    return {"default": "tcp"}.get(iface, iface.partition(".")[0])


class LibvirtISCSIVolumeDriver(LibvirtBaseBlockVolumeDriver):
    """iSCSI volumes logged in by the host, attached as ``<disk type='block'>``."""

    driver_volume_type = "iscsi"
    data_shape = connection_schema.ISCSI
    # The host's trees; another root (a test, a chroot) is passed to __init__.
    sysfs_root = "/sys"
    dev_root = "/dev"
    nodes_dir = NODES_DIR

    def __init__(self, host, execute=None, *, sysfs_root: str | None = None,
                 dev_root: str | None = None, nodes_dir: str | None = None, sleep=None):
        super().__init__(host, execute)
        self.sysfs_root = sysfs_root or self.sysfs_root
        self.dev_root = dev_root or self.dev_root
        self.nodes_dir = nodes_dir or self.nodes_dir
        self.sleep = sleep or time.sleep
        self.devices = Devices(self.dev_root, self.sysfs_root)
        self._warned: set[str] = set()

    def validate(self, connection_info: dict) -> list:
        super().validate(connection_info)
        data = connection_info["data"]
        auth_settings(data)
        return iscsi_targets(data)

    # -- what differs between the iSCSI and iSER drivers ---------------------
    def configured_iface(self) -> str:
        return CONF.libvirt.iscsi_iface or DEFAULT_IFACE

    def use_multipath(self) -> bool:
        return CONF.libvirt.iscsi_use_multipath

    def scan_tries(self) -> int:
        return CONF.libvirt.num_iscsi_scan_tries

    # -- helpers -------------------------------------------------------------
    @property
    def iscsiadm(self) -> Iscsiadm:
        return Iscsiadm(self.execute, CONF.libvirt.iscsi_login_timeout)

    def _lock(self):
        """Serialise logins and logouts of every hvplug process on this host.

        The lock is the node record directory itself (0700, as iscsiadm makes it).
        """
        return fileutils.locked(fileutils.private_dir(self.nodes_dir))

    def choose_iface(self) -> str:
        """The configured iface, or ``default`` when it is unusable and fallback is on."""
        wanted = self.configured_iface()
        if wanted == DEFAULT_IFACE:
            return wanted
        reason = IfaceManager(execute=self.execute,
                              sysfs_root=self.sysfs_root).unusable_reason(wanted)
        if reason is None:
            return wanted
        if not CONF.libvirt.iscsi_iface_fallback:
            raise exception.IfaceUnusable(iface=wanted, reason=reason)
        if wanted not in self._warned:
            self._warned.add(wanted)
            LOG.warning("iSCSI iface '%s' cannot be used (%s); falling back to 'default' "
                        "(software TCP). Set [libvirt] iscsi_iface_fallback = false to fail "
                        "instead.", wanted, reason)
        return DEFAULT_IFACE

    # -- connect -------------------------------------------------------------
    def connect_volume(self, connection_info: dict, domain: str) -> None:
        data = connection_info["data"]
        targets = iscsi_targets(data)
        auth = auth_settings(data)
        iface = self.choose_iface()
        multipath = self.use_multipath()
        with self._lock():
            paths = self._connect_targets(targets, iface, data, auth, every=multipath)
        device = paths[0]["device"]
        dm = self._wait_for_multipath(paths) if multipath else None
        if multipath and dm is None:
            LOG.warning("no multipath device holds %s; attaching the single path %s",
                        ", ".join(p["device"] for p in paths), device)
        first = paths[0]
        data.update(iface=iface, device_path=dm or device, multipath=dm is not None,
                    sessions=paths, selected_target={key: first[key]
                                                     for key in ("portal", "iqn", "lun")})
        LOG.info("%s logged in through iface %s: %s", first["iqn"], iface, data["device_path"])

    def _connect_targets(self, targets: list[ISCSITarget], iface: str, data: dict,
                         auth: dict | None, every: bool) -> list[dict]:
        """Log in to every target (multipath) or to the first that works."""
        paths, errors = [], []
        for target in targets:
            try:
                paths.append(self._connect_target(target, iface, data, auth))
            except exception.HvplugError as exc:
                errors.append(exc)
                LOG.warning("iSCSI path %s %s through iface %s failed: %s",
                            target.portal, target.iqn, iface, exc)
                continue
            if not every:
                break
        if not paths:
            raise errors[0]
        return paths

    def _connect_target(self, target: ISCSITarget, iface: str, data: dict,
                        auth: dict | None) -> dict:
        """One portal: discovery, node record, CHAP, login, session, device."""
        if not data.get("target_discovered"):
            self._discover(target, iface)
        existed = False
        try:
            self._prepare_node(target, iface, auth)
            # A session that is up already (another LUN of a shared target)
            # is someone else's: use it, and never log it out on failure.
            session = self._session(target, iface)
            existed = session is not None
            if session is None:
                self._login(target, iface, auth)
                session = self._session(target, iface)
            if session is None:
                raise exception.ISCSILoginFailed(
                    iqn=target.iqn, portal=target.portal, iface=iface,
                    reason="iscsiadm reported a login but lists no session to the target")
            device = self._wait_for_device(target, session)
        except exception.HvplugError:
            if not existed:
                self._forget(target, iface, quiet=True)
            raise
        return {"portal": target.portal, "iqn": target.iqn, "lun": target.lun,
                "sid": session.sid, "transport": session.transport, "device": str(device)}

    def _discover(self, target: ISCSITarget, iface: str) -> None:
        try:
            offered = self.iscsiadm.discover(target.portal, iface)
        except exception.ProcessExecutionError as exc:
            raise exception.ISCSIDiscoveryFailed(portal=target.portal, iface=iface,
                                                 reason=exc.message) from None
        if not any(iqn.lower() == target.iqn.lower() for _, iqn in offered):
            raise exception.ISCSIDiscoveryFailed(
                portal=target.portal, iface=iface,
                reason=f"the target does not offer {target.iqn} to this initiator")

    def _prepare_node(self, target: ISCSITarget, iface: str, auth: dict | None) -> None:
        iscsiadm = self.iscsiadm
        if not iscsiadm.node_exists(target.iqn, target.portal, iface):
            iscsiadm.node(target.iqn, target.portal, iface, "-o", "new")
        # automatic: iscsid logs in again after a reboot, so a persistent
        # domain finds its disk.
        iscsiadm.node(target.iqn, target.portal, iface,
                      "-o", "update", "-n", "node.startup", "-v", "automatic")
        if auth:  # last, so nothing rewrites the record before the login reads it
            NodeRecords(self.nodes_dir).update(target.iqn, target.host, target.port, iface, auth)

    def _login(self, target: ISCSITarget, iface: str, auth: dict | None) -> None:
        where = {"iqn": target.iqn, "portal": target.portal, "iface": iface}
        try:
            # 15: the session came up since we looked; it is there, as wanted.
            self.iscsiadm.node(target.iqn, target.portal, iface, "--login",
                               ok=(SESSION_EXISTS,), secrets=_secrets(auth))
        except exception.ProcessTimeout:
            raise exception.ISCSILoginTimeout(
                timeout=CONF.libvirt.iscsi_login_timeout, **where) from None
        except exception.ProcessExecutionError as exc:
            if exc.kwargs.get("status") == LOGIN_AUTH_FAILED and auth:
                raise exception.AuthenticationFailed(
                    target=target.iqn, portal=target.portal,
                    username=auth["node.session.auth.username"]) from None
            raise exception.ISCSILoginFailed(reason=exc.message, **where) from None

    def _session(self, target: ISCSITarget, iface: str) -> Session | None:
        """The session to ``target`` through ``iface``, whatever its transport prefix.

        The kernel names each session's iface in sysfs; where it does not,
        the transport the iface name implies decides.
        """
        for session in self.iscsiadm.sessions():
            if not session.reaches(target.host, target.port, target.iqn):
                continue
            name = self.devices.session_iface(session.sid)
            if name == iface or (name is None and session.transport == _transport_of(iface)):
                return session
        return None

    def _wait_for_device(self, target: ISCSITarget, session: Session) -> Path:
        """The LUN's by-path link, rescanning the session between bounded waits."""
        tries = self.scan_tries()
        for attempt in range(tries + 1):
            links = self.devices.by_path_links(target)
            if links:
                return links[0]
            if attempt == tries:
                break
            self.iscsiadm.rescan(session.sid)
            self.sleep(min(2.0 ** attempt, _MAX_SCAN_WAIT))
        raise exception.ISCSIDeviceNotFound(
            lun=target.lun, iqn=target.iqn, portal=target.portal, tries=tries,
            pattern=self.devices.by_path_pattern(target))

    def _wait_for_multipath(self, paths: list[dict]) -> str | None:
        """The multipath device over ``paths``, if multipathd assembles one in time."""
        tries = self.scan_tries()
        for attempt in range(tries + 1):
            for path in paths:
                holder = self.devices.multipath_holder(path["device"])
                if holder:
                    return str(self.devices.dm_path(holder))
            if attempt == tries:
                break
            self.sleep(min(2.0 ** attempt, _MAX_SCAN_WAIT))
        return None

    def _forget(self, target: ISCSITarget, iface: str, quiet: bool = False) -> None:
        """Log out of ``target`` through ``iface`` and delete its node record."""
        iscsiadm = self.iscsiadm
        # 21: no session / no record left: what we want anyway.
        for op in (("--logout",), ("-o", "delete")):
            try:
                iscsiadm.node(target.iqn, target.portal, iface, *op, ok=(NO_RECORDS,))
            except exception.HvplugError as exc:
                if not quiet:
                    raise
                LOG.warning("cleaning up %s at %s (%s) failed: %s",
                            target.iqn, target.portal, " ".join(op), exc)

    # -- disk ----------------------------------------------------------------
    def device_path(self, connection_info: dict) -> str:
        """The recorded device, else the by-path link the primary portal gives."""
        data = connection_info["data"]
        return data.get("device_path") or str(
            self.devices.by_path_link(iscsi_targets(data)[0]))

    def is_same_volume(self, disk: config.LibvirtConfigGuestDisk,
                       connection_info: dict) -> bool:
        if disk.source_type != "block" or not disk.source_path:
            return False
        wanted = {lun_key(t) for t in iscsi_targets(connection_info["data"])}
        return any(lun_key(t) in wanted
                   for t in self.devices.disk_targets(disk.source_path))

    @classmethod
    def handles_disk(cls, disk: config.LibvirtConfigGuestDisk) -> bool:
        return (disk.source_type == "block" and bool(disk.source_path)
                and bool(Devices(cls.dev_root, cls.sysfs_root)
                         .disk_targets(disk.source_path)))

    @classmethod
    def connection_info_from_disk(cls, disk: config.LibvirtConfigGuestDisk) -> dict:
        targets = Devices(cls.dev_root, cls.sysfs_root).disk_targets(disk.source_path)
        first = targets[0]
        data = {"target_portal": first.portal, "target_iqn": first.iqn,
                "target_lun": first.lun, "target_discovered": True,
                "device_path": disk.source_path}
        if len(targets) > 1:
            data.update(target_portals=[t.portal for t in targets],
                        target_iqns=[t.iqn for t in targets],
                        target_luns=[t.lun for t in targets])
        return {"driver_volume_type": cls.driver_volume_type, "data": data,
                "serial": disk.serial}

    # -- disconnect ----------------------------------------------------------
    def disconnect_volume(self, connection_info: dict, domain: str) -> None:
        """Remove the LUN's devices and, when no domain uses the target, log out."""
        data = connection_info["data"]
        targets = iscsi_targets(data)
        with self._lock():
            in_use = attached_luns(
                self.host, lambda path: [lun_key(t) for t in self.devices.disk_targets(path)])
            users = sorted({name for t in targets for name in in_use.get(lun_key(t), ())})
            if users:
                LOG.info("keeping the iSCSI sessions of %s: %s still use it",
                         targets[0].iqn, ", ".join(users))
                return
            self._remove_devices(targets)
            unused = [t for t in targets
                      if not any(key[:3] == lun_key(t)[:3] for key in in_use)]
            if len(unused) < len(targets):
                LOG.info("keeping the sessions to %s: other LUNs of it are in use",
                         targets[0].iqn)
            sessions = [] if data.get("iface") or not unused else self.iscsiadm.sessions()
            for target in unused:
                for iface in self._ifaces_of(target, data, sessions):
                    self._forget(target, iface)

    def _remove_devices(self, targets: list[ISCSITarget]) -> None:
        """Flush the multipath map over the LUN, then delete its SCSI devices."""
        links = [link for t in targets for link in self.devices.by_path_links(t)]
        for holder in sorted({h for h in map(self.devices.multipath_holder, links) if h}):
            # A map left over deleted paths queues I/O forever; fail instead.
            self.execute("multipath", "-f", self.devices.dm_name(holder),
                         timeout=CONF.libvirt.iscsi_login_timeout)
        for link in links:
            self.devices.delete_scsi_device(link)

    def _ifaces_of(self, target: ISCSITarget, data: dict,
                   sessions: list[Session] | None) -> list[str]:
        """The ifaces to log out through: recorded, else the sessions' own."""
        if data.get("iface"):
            return [data["iface"]]
        names = {self.devices.session_iface(s.sid) for s in sessions or ()
                 if s.reaches(target.host, target.port, target.iqn)}
        names.discard(None)
        if names:
            return sorted(names)
        try:
            return [self.choose_iface()]
        except exception.IfaceUnusable:
            return [self.configured_iface()]

    # -- extend --------------------------------------------------------------
    def extend_volume(self, connection_info: dict, domain: str, dev: str,
                      new_size: int) -> int:
        """Rescan, read the LUN's new size from sysfs and hand it to QEMU."""
        data = connection_info["data"]
        targets = iscsi_targets(data)
        for session in self.iscsiadm.sessions():
            if any(session.reaches(t.host, t.port, t.iqn) for t in targets):
                self.iscsiadm.rescan(session.sid)
        device = self.device_path(connection_info)
        holder = self.devices.multipath_holder(device) or (
            self.devices.block_name(device) if self.devices.is_dm(device) else None)
        if holder:
            self.execute("multipathd", "resize", "map", self.devices.dm_name(holder),
                         timeout=CONF.libvirt.iscsi_login_timeout)
        size = self.devices.size_bytes(holder or self.devices.block_name(device))
        if size < new_size:
            LOG.warning("%s is %d bytes after the rescan, less than the %d asked for",
                        device, size, new_size)
        self.host.block_resize(domain, dev, size)
        return size

