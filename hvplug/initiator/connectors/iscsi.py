"""iSCSI host attach through open-iscsi: discovery, node records, login, devices.

The host logs in through an open-iscsi iface (software TCP ``default``,
``iser``, or an offload HBA such as ``cxgb4i.00:07:43:28:b2:58``) and the
volume's device is the stable ``/dev/disk/by-path/...`` link, or the
multipath map over every portal.  iscsiadm is driven directly
(:mod:`hvplug.initiator.iscsiadm`), not through os-brick: doc/host-iscsi.md
says why.  ``props`` is Cinder's ``connection_info["data"]``::

    {"target_portal": "192.0.2.10:3260",
     "target_iqn": "iqn.2010-10.org.openstack:volume-42",
     "target_lun": 1, "target_discovered": false,
     "auth_method": "CHAP", "auth_username": "u", "auth_password": "p",
     "target_portals": [...], "target_iqns": [...], "target_luns": [...]}

Every login and logout of every hvplug process on the host runs under one
lock, the node record directory itself.
"""

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path

from hvplug import exception
from hvplug.connection_schema import ISCSITarget, chap_credentials, iscsi_targets, require
from hvplug.initiator.connectors.base import DeviceInfo, InitiatorConnector, ISCSIPath, LunKey
from hvplug.initiator.devices import Devices, lun_key
from hvplug.initiator.iface import DEFAULT_IFACE, IfaceManager
from hvplug.initiator.iscsiadm import (
    LOGIN_AUTH_FAILED,
    NO_RECORDS,
    NODES_DIR,
    SESSION_EXISTS,
    Iscsiadm,
    NodeRecords,
    Session,
)
from hvplug.utils import executor, fileutils

LOG = logging.getLogger(__name__)

_MAX_SCAN_WAIT = 8.0  # seconds between rescans: 1, 2, 4, 8, 8...


def auth_settings(props: dict) -> dict[str, str] | None:
    """The node record's CHAP settings for ``props``; mutual with ``auth_username_in``."""
    credentials = chap_credentials(props)
    if credentials is None:
        return None
    settings = {"node.session.auth.authmethod": "CHAP",
                "node.session.auth.username": credentials[0],
                "node.session.auth.password": credentials[1]}
    if props.get("auth_username_in") or props.get("auth_password_in"):
        settings["node.session.auth.username_in"] = require(props, "auth_username_in")
        settings["node.session.auth.password_in"] = require(props, "auth_password_in")
    return settings


def _secrets(settings: dict[str, str] | None) -> tuple[str, ...]:
    return tuple(v for k, v in (settings or {}).items() if "password" in k)


def _transport_of(iface: str) -> str:
    """The transport an iface name implies: offload records are ``<transport>.<hw>``."""
    return {DEFAULT_IFACE: "tcp"}.get(iface, iface.partition(".")[0])


def volume_data_from_device(devices: Devices, path: str) -> dict | None:
    """Enough ``connection_info["data"]`` to disconnect the iSCSI volume
    behind block device ``path`` (a by-path link or a multipath map); None
    when no iSCSI LUN is behind it."""
    targets = devices.disk_targets(path)
    if not targets:
        return None
    first = targets[0]
    data: dict = {"target_portal": first.portal, "target_iqn": first.iqn,
                  "target_lun": first.lun, "target_discovered": True, "device_path": path}
    if len(targets) > 1:
        data.update(target_portals=[t.portal for t in targets],
                    target_iqns=[t.iqn for t in targets],
                    target_luns=[t.lun for t in targets])
    return data


class ISCSIConnector(InitiatorConnector):
    """Host-attached iSCSI LUNs through one open-iscsi iface.

    ``iface``: the iface record to log in through; when it is unusable
    (``IfaceManager.unusable_reason``), ``default`` if ``iface_fallback``,
    else :class:`~hvplug.exception.IfaceUnusable`.  ``use_multipath``:
    log in to every portal and hand out the multipath map.  ``scan_tries``:
    rescans while waiting for a device.  The trees (``sysfs_root``,
    ``dev_root``, ``nodes_dir``) are the host's unless a test passes others.
    ``warned``: the ifaces whose fallback was logged already (shared by the
    connectors of one driver, so it is logged once).
    """

    protocol = "iscsi"

    def __init__(self, execute: Callable | None = None, *, iface: str = DEFAULT_IFACE,
                 iface_fallback: bool = True, use_multipath: bool = False,
                 scan_tries: int = 3, login_timeout: float = 30.0,
                 sysfs_root: str = "/sys", dev_root: str = "/dev",
                 nodes_dir: str = NODES_DIR, sleep: Callable[[float], object] | None = None,
                 warned: set[str] | None = None):
        self.execute = execute or executor.execute
        self.iface = iface
        self.iface_fallback = iface_fallback
        self.use_multipath = use_multipath
        self.scan_tries = scan_tries
        self.login_timeout = login_timeout
        self.sysfs_root = sysfs_root
        self.nodes_dir = nodes_dir
        self.sleep = sleep or time.sleep
        self.warned = set() if warned is None else warned
        self.devices = Devices(dev_root, sysfs_root)
        self.iscsiadm = Iscsiadm(self.execute, login_timeout)

    def _lock(self):
        """Serialise logins and logouts of every hvplug process on this host.

        The lock is the node record directory itself (0700, as iscsiadm makes it).
        """
        return fileutils.locked(fileutils.private_dir(self.nodes_dir))

    def choose_iface(self) -> str:
        """The configured iface, or ``default`` when it is unusable and fallback is on."""
        wanted = self.iface
        if wanted == DEFAULT_IFACE:
            return wanted
        reason = IfaceManager(execute=self.execute,
                              sysfs_root=self.sysfs_root).unusable_reason(wanted)
        if reason is None:
            return wanted
        if not self.iface_fallback:
            raise exception.IfaceUnusable(iface=wanted, reason=reason)
        if wanted not in self.warned:
            self.warned.add(wanted)
            LOG.warning("iSCSI iface '%s' cannot be used (%s); falling back to 'default' "
                        "(software TCP). Set [libvirt] iscsi_iface_fallback = false to fail "
                        "instead.", wanted, reason)
        return DEFAULT_IFACE

    # -- connect -------------------------------------------------------------
    def connect_volume(self, props: dict) -> DeviceInfo:
        targets = iscsi_targets(props)
        auth = auth_settings(props)
        iface = self.choose_iface()
        with self._lock():
            paths = self._connect_targets(targets, iface, props, auth,
                                          every=self.use_multipath)
        device = paths[0].device
        dm = self._wait_for_multipath(paths) if self.use_multipath else None
        if self.use_multipath and dm is None:
            LOG.warning("no multipath device holds %s; attaching the single path %s",
                        ", ".join(p.device for p in paths), device)
        info = DeviceInfo(path=dm or device, multipath=dm is not None, iface=iface,
                          paths=tuple(paths))
        LOG.info("%s logged in through iface %s: %s", paths[0].iqn, iface, info.path)
        return info

    def _connect_targets(self, targets: list[ISCSITarget], iface: str, props: dict,
                         auth: dict | None, every: bool) -> list[ISCSIPath]:
        """Log in to every target (multipath) or to the first that works."""
        paths, errors = [], []
        for target in targets:
            try:
                paths.append(self._connect_target(target, iface, props, auth))
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

    def _connect_target(self, target: ISCSITarget, iface: str, props: dict,
                        auth: dict | None) -> ISCSIPath:
        """One portal: discovery, node record, CHAP, login, session, device."""
        if not props.get("target_discovered"):
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
        return ISCSIPath(portal=target.portal, iqn=target.iqn, lun=target.lun,
                         sid=session.sid, transport=session.transport, device=str(device))

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
            raise exception.ISCSILoginTimeout(timeout=self.login_timeout, **where) from None
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
        tries = self.scan_tries
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

    def _wait_for_multipath(self, paths: list[ISCSIPath]) -> str | None:
        """The multipath device over ``paths``, if multipathd assembles one in time."""
        tries = self.scan_tries
        for attempt in range(tries + 1):
            for path in paths:
                holder = self.devices.multipath_holder(path.device)
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

    # -- devices ---------------------------------------------------------------
    def device_path(self, props: dict) -> str:
        """``data.device_path`` if given, else the LUN's existing by-path link
        (an offload HBA's or iSER's ``pci-...-ip-...`` too, any portal), else
        the name the software initiator would give the primary portal's."""
        if props.get("device_path"):
            return props["device_path"]
        targets = iscsi_targets(props)
        for target in targets:
            links = self.devices.by_path_links(target)
            if links:
                return str(links[0])
        return str(self.devices.by_path_link(targets[0]))

    def volume_luns(self, props: dict) -> list[LunKey]:
        return [lun_key(t) for t in iscsi_targets(props)]

    def luns_of(self, path: str) -> list[LunKey]:
        return [lun_key(t) for t in self.devices.disk_targets(path)]

    # -- disconnect ----------------------------------------------------------
    def disconnect_volume(self, props: dict, device_info: DeviceInfo | None,
                          in_use: Collection[LunKey] = ()) -> None:
        """Delete the LUN's devices, then log out of each target no LUN in
        ``in_use`` (the LUNs other guests still use) is reached through."""
        targets = iscsi_targets(props)
        with self._lock():
            self._remove_devices(targets)
            busy_targets = {key[:3] for key in in_use if isinstance(key, tuple)}
            unused = [t for t in targets if lun_key(t)[:3] not in busy_targets]
            if len(unused) < len(targets):
                LOG.info("keeping the sessions to %s: other LUNs of it are in use",
                         targets[0].iqn)
            iface = (device_info.iface if device_info else None) or props.get("iface")
            sessions = [] if iface or not unused else self.iscsiadm.sessions()
            for target in unused:
                for name in self._ifaces_of(target, iface, sessions):
                    self._forget(target, name)

    def _remove_devices(self, targets: list[ISCSITarget]) -> None:
        """Flush the multipath map over the LUN, then delete its SCSI devices."""
        links = [link for t in targets for link in self.devices.by_path_links(t)]
        for holder in sorted({h for h in map(self.devices.multipath_holder, links) if h}):
            # A map left over deleted paths queues I/O forever; fail instead.
            self.execute("multipath", "-f", self.devices.dm_name(holder),
                         timeout=self.login_timeout)
        for link in links:
            self.devices.delete_scsi_device(link)

    def _ifaces_of(self, target: ISCSITarget, recorded: str | None,
                   sessions: list[Session]) -> list[str]:
        """The ifaces to log out through: recorded, else the sessions' own."""
        if recorded:
            return [recorded]
        names = {self.devices.session_iface(s.sid) for s in sessions
                 if s.reaches(target.host, target.port, target.iqn)}
        names.discard(None)
        if names:
            return sorted(n for n in names if n is not None)
        try:
            return [self.choose_iface()]
        except exception.IfaceUnusable:
            return [self.iface]

    # -- extend --------------------------------------------------------------
    def extend_volume(self, props: dict) -> int:
        """Rescan the volume's sessions and resize its multipath map; its size."""
        targets = iscsi_targets(props)
        for session in self.iscsiadm.sessions():
            if any(session.reaches(t.host, t.port, t.iqn) for t in targets):
                self.iscsiadm.rescan(session.sid)
        device = self.device_path(props)
        holder = self.devices.multipath_holder(device) or (
            self.devices.block_name(device) if self.devices.is_dm(device) else None)
        if holder:
            self.execute("multipathd", "resize", "map", self.devices.dm_name(holder),
                         timeout=self.login_timeout)
        return self.devices.size_bytes(holder or self.devices.block_name(device))
