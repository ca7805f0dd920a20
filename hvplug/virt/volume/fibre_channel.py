"""Host-attached Fibre Channel: os-brick finds the LUN, the guest gets the block device.

os-brick's ``FibreChannelConnector`` scans the HBAs for the LUN and returns
its ``/dev/disk/by-path/pci-<hba>-fc-0x<wwn>-lun-<lun>`` link (or the
multipath device over every path); the guest gets ``<disk type='block'>``
on it.  os-brick is imported only here, on first use: ``hvplug`` itself
and this module load without it (doc/fibre-channel.md).

``connection_info`` is taken as Cinder's FC drivers (and the X-IO ISE one)
return it, unchanged::

    {"driver_volume_type": "fibre_channel",
     "data": {"target_discovered": true,
              "target_wwn": ["5001f4a0c0d10001", "5001f4a0c0d10002"],
              "target_lun": 1,
              "initiator_target_map": {"21000024ff4b9a3c": ["5001f4a0c0d10001",
                                                          "5001f4a0c0d10002"]},
              "volume_id": "42"},
     "serial": "42"}

``target_wwn`` may be a single string; ``target_wwns``/``target_luns`` are
accepted too.  ``connect_volume`` records ``device_path``, ``multipath``
and ``scsi_wwn`` in ``data``.
"""

import copy
import logging
import os
import re
from pathlib import Path

from hvplug import connection_schema, exception
from hvplug.conf import CONF
from hvplug.connection_schema import FcLun, fc_luns
from hvplug.initiator.devices import Devices, attached_luns
from hvplug.utils import fileutils
from hvplug.virt import config
from hvplug.virt.volume.base import LibvirtBaseBlockVolumeDriver

LOG = logging.getLogger(__name__)

# Where os-brick's file locks go when [oslo_concurrency] lock_path is unset.
LOCK_DIR = "/var/lib/hvplug/locks"
# udev's path_id for FC: [platform-...-]pci-<hba>-fc-0x<wwpn>-lun-<lun>
_BY_PATH = re.compile(r"-fc-0x(?P<wwn>[0-9a-fA-F]{16})-lun-(?P<lun>\d+)$")


# -- connection_info -------------------------------------------------------------

def _no_0x(wwn: str) -> str:
    return wwn[2:] if wwn[:2].lower() == "0x" else wwn


def parse_by_path(name: str) -> FcLun | None:
    """The FC LUN a ``/dev/disk/by-path`` name points at, or None."""
    match = _BY_PATH.search(name)
    return (match["wwn"].lower(), int(match["lun"])) if match else None


def _wwid(devices: Devices, block: str) -> str | None:
    """The LUN's SCSI identifier (VPD page 0x83), the same through every path."""
    path = devices.sysfs_root / "block" / block / "device" / "wwid"
    return (path.read_text().strip() or None) if path.is_file() else None


def _fc_links(devices: Devices) -> list[tuple[Path, FcLun]]:
    entries = sorted(os.listdir(devices.by_path_dir)) if devices.by_path_dir.is_dir() else []
    return [(devices.by_path_dir / entry, lun) for entry in entries
            if (lun := parse_by_path(entry))]


def disk_luns(devices: Devices, path: str) -> list[FcLun]:
    """The FC paths behind a disk's source: a by-path link or a multipath map.

    A by-path link names one target port; the LUN's other paths are the
    links whose disks share its wwid, so a detach removes them all.
    """
    source = Path(path)
    if source.parent == devices.by_path_dir:
        lun = parse_by_path(source.name)
        wwid = _wwid(devices, devices.block_name(source)) if lun else None
        if wwid is None:
            return [lun] if lun else []
        return sorted({lun} | {other for link, other in _fc_links(devices)
                               if _wwid(devices, devices.block_name(link)) == wwid})
    if not source.is_relative_to(devices.dev_root) or not devices.is_dm(source):
        return []
    slaves = devices.sysfs_root / "block" / devices.block_name(source) / "slaves"
    names = set(os.listdir(slaves)) if slaves.is_dir() else set()
    return [lun for link, lun in _fc_links(devices) if devices.block_name(link) in names]


# -- os-brick ----------------------------------------------------------------------

class BrickExecute:
    """os-brick's ``execute(*cmd, **processutils_kwargs)`` on hvplug's executor.

    Privileges come from running as root (privsep runs in-process), so
    ``run_as_root``/``root_helper`` are dropped; failures are raised as
    processutils' error because that is what os-brick catches.
    """

    timeout = 120.0

    def __init__(self, execute):
        self.execute = execute

    def __call__(self, *cmd, **kwargs) -> tuple[str, str]:
        from oslo_concurrency import processutils

        argv = tuple(str(arg) for arg in cmd)
        if kwargs.get("shell"):
            argv = ("sh", "-c", " ".join(argv))
        try:
            return self.execute(*argv, check_exit_code=_exit_codes(kwargs),
                                timeout=self.timeout, input=kwargs.get("process_input"))
        except exception.ProcessExecutionError as exc:
            raise processutils.ProcessExecutionError(
                stdout=exc.kwargs.get("stdout", ""), stderr=exc.stderr,
                exit_code=exc.kwargs.get("status"), cmd=" ".join(argv)) from None


def _exit_codes(kwargs: dict) -> tuple[int, ...]:
    wanted = kwargs.get("check_exit_code", True)
    if wanted is True:
        return (0,)
    if wanted is False:
        return tuple(range(256))
    return (wanted,) if isinstance(wanted, int) else tuple(wanted)


def prepare_os_brick(lock_dir: str) -> None:
    """What os-brick needs before its first call, so no user meets RequiredOptError.

    A configured ``[oslo_concurrency] lock_path`` wins; otherwise os-brick's
    file locks go to ``lock_dir`` (0700).  Privileged calls run in this
    process (hvplug runs as root) instead of a privsep daemon.
    """
    try:
        import os_brick
        from os_brick import privileged
        from oslo_concurrency import lockutils
    except ImportError as exc:
        raise exception.OsBrickMissing(reason=str(exc)) from None
    lockutils.set_defaults(lock_dir)
    if CONF.oslo_concurrency.lock_path == lock_dir:
        fileutils.private_dir(lock_dir)
    os_brick.setup(CONF)
    for context in (privileged.default, privileged.brick_privsep_hide_output):
        context.set_client_mode(False)


def os_brick_connector(execute, use_multipath: bool, scan_tries: int, lock_dir: str):
    """os-brick's FibreChannelConnector, running commands through ``execute``."""
    prepare_os_brick(lock_dir)
    from os_brick.initiator.connectors.fibre_channel import FibreChannelConnector

    return FibreChannelConnector(None, execute=BrickExecute(execute),
                                 use_multipath=use_multipath,
                                 device_scan_attempts=scan_tries)


# -- the driver ----------------------------------------------------------------------

class LibvirtFibreChannelVolumeDriver(LibvirtBaseBlockVolumeDriver):
    """FC volumes attached by the host through os-brick, as ``<disk type='block'>``."""

    driver_volume_type = "fibre_channel"
    data_shape = connection_schema.FIBRE_CHANNEL
    # The host's trees; another root (a test, a chroot) is passed to __init__.
    sysfs_root = "/sys"
    dev_root = "/dev"
    lock_dir = LOCK_DIR
    # How the os-brick connector is made: (execute, use_multipath, scan_tries, lock_dir).
    connector_factory = staticmethod(os_brick_connector)

    def __init__(self, host, execute=None, *, sysfs_root: str | None = None,
                 dev_root: str | None = None, lock_dir: str | None = None):
        super().__init__(host, execute)
        self.sysfs_root = sysfs_root or self.sysfs_root
        self.dev_root = dev_root or self.dev_root
        self.lock_dir = lock_dir or self.lock_dir
        self.devices = Devices(self.dev_root, self.sysfs_root)
        self._connector = None

    def validate(self, connection_info: dict) -> list:
        super().validate(connection_info)
        return fc_luns(connection_info["data"])

    # -- settings ------------------------------------------------------------------
    @staticmethod
    def use_multipath() -> bool:
        return CONF.libvirt.fc_use_multipath

    @staticmethod
    def scan_tries() -> int:
        return CONF.libvirt.num_fc_scan_tries

    # -- helpers -------------------------------------------------------------------
    @property
    def connector(self):
        if self._connector is None:
            self._connector = self.connector_factory(
                self.execute, self.use_multipath(), self.scan_tries(), self.lock_dir)
        return self._connector

    def host_wwpns(self) -> list[str]:
        """This host's HBA port WWPNs, from ``/sys/class/fc_host/host*/port_name``."""
        hosts = Path(self.sysfs_root) / "class" / "fc_host"
        names = sorted(hosts.glob("host*/port_name")) if hosts.is_dir() else []
        return [name.read_text().strip().lower().removeprefix("0x") for name in names]

    def _properties(self, data: dict) -> dict:
        """A copy for os-brick, which rewrites what it is given.

        os-brick writes ``0x<wwn>`` into the by-path names it looks for, so a
        WWN given as ``0x...`` loses its prefix here.
        """
        props = copy.deepcopy(data)
        for key in ("target_wwn", "target_wwns"):
            value = props.get(key)
            if isinstance(value, str):
                props[key] = _no_0x(value)
            elif isinstance(value, list):
                props[key] = [_no_0x(w) for w in value]
        return props

    def _describe(self, luns: list[FcLun]) -> dict:
        return {"lun": luns[0][1], "wwns": ", ".join(w for w, _ in luns)}

    # -- connect -------------------------------------------------------------------
    def connect_volume(self, connection_info: dict, domain: str) -> None:
        data = connection_info["data"]
        luns = fc_luns(data)
        wwpns = self.host_wwpns()
        if not wwpns:
            raise exception.FibreChannelNoHBA(
                fc_host_dir=str(Path(self.sysfs_root) / "class" / "fc_host"),
                **self._describe(luns))
        mapped = data.get("initiator_target_map") or {}
        if mapped and not {w.lower() for w in mapped} & set(wwpns):
            LOG.warning("initiator_target_map names %s, none of this host's WWPNs (%s); "
                        "os-brick will scan every HBA", ", ".join(mapped), ", ".join(wwpns))
        info = self._call("connect", self.connector.connect_volume, self._properties(data),
                          luns=luns, wwpns=wwpns)
        data.update(device_path=info["path"], scsi_wwn=info.get("scsi_wwn"),
                    multipath=bool(info.get("multipath_id")))
        LOG.info("FC LUN %s of %s attached on this host as %s",
                 luns[0][1], luns[0][0], info["path"])

    def _call(self, action: str, method, *args, luns: list[FcLun], wwpns=None):
        """Run an os-brick call; its errors become hvplug's, naming the fix."""
        from os_brick import exception as brick

        try:
            return method(*args)
        except brick.NoFibreChannelHostsFound:
            raise exception.FibreChannelNoHBA(
                fc_host_dir=str(Path(self.sysfs_root) / "class" / "fc_host"),
                **self._describe(luns)) from None
        except (brick.NoFibreChannelVolumeDeviceFound, brick.VolumePathsNotFound) as exc:
            raise exception.FibreChannelDeviceNotFound(
                reason=str(exc).rstrip("."), wwpns=", ".join(wwpns or self.host_wwpns()) or "none",
                **self._describe(luns)) from None
        except brick.BrickException as exc:
            raise exception.FibreChannelFailed(action=action, reason=str(exc)) from None

    # -- disk ----------------------------------------------------------------------
    def device_path(self, connection_info: dict) -> str:
        """The recorded device, else the LUN's existing by-path link."""
        data = connection_info["data"]
        if data.get("device_path"):
            return data["device_path"]
        wanted = set(fc_luns(data))
        for link, lun in _fc_links(self.devices):
            if lun in wanted:
                return str(link)
        raise exception.InvalidConnectionInfo(
            reason="data.device_path is missing and no by-path link of the LUN exists; "
                   "connect the volume first")

    def is_same_volume(self, disk: config.LibvirtConfigGuestDisk,
                       connection_info: dict) -> bool:
        if disk.source_type != "block" or not disk.source_path:
            return False
        wanted = set(fc_luns(connection_info["data"]))
        return any(lun in wanted for lun in disk_luns(self.devices, disk.source_path))

    @classmethod
    def handles_disk(cls, disk: config.LibvirtConfigGuestDisk) -> bool:
        return (disk.source_type == "block" and bool(disk.source_path)
                and bool(disk_luns(Devices(cls.dev_root, cls.sysfs_root), disk.source_path)))

    @classmethod
    def connection_info_from_disk(cls, disk: config.LibvirtConfigGuestDisk) -> dict:
        luns = disk_luns(Devices(cls.dev_root, cls.sysfs_root), disk.source_path)
        data = {"target_wwn": [w for w, _ in luns], "target_lun": luns[0][1],
                "target_discovered": True, "device_path": disk.source_path}
        if len({lun for _, lun in luns}) > 1:
            data["target_luns"] = [lun for _, lun in luns]
        return {"driver_volume_type": cls.driver_volume_type, "data": data,
                "serial": disk.serial}

    # -- disconnect ----------------------------------------------------------------
    def disconnect_volume(self, connection_info: dict, domain: str) -> None:
        """Remove the LUN's devices unless a domain still uses them."""
        data = connection_info["data"]
        luns = fc_luns(data)
        in_use = attached_luns(self.host, lambda path: disk_luns(self.devices, path))
        users = sorted({name for lun in luns for name in in_use.get(lun, ())})
        if users:
            LOG.info("keeping the devices of FC LUN %s of %s: %s still use them",
                     luns[0][1], luns[0][0], ", ".join(users))
            return
        device_info = {"type": "block", "path": data.get("device_path")}
        self._call("disconnect", self.connector.disconnect_volume,
                   self._properties(data), device_info, luns=luns)

    # -- extend --------------------------------------------------------------------
    def extend_volume(self, connection_info: dict, domain: str, dev: str,
                      new_size: int) -> int:
        """Have the kernel re-read the LUN's size, then hand it to QEMU."""
        data = connection_info["data"]
        luns = fc_luns(data)
        size = self._call("extend", self.connector.extend_volume,
                          self._properties(data), luns=luns)
        if not size:
            size = self.devices.size_bytes(self.devices.block_name(
                self.device_path(connection_info)))
        if size < new_size:
            LOG.warning("FC LUN %s is %d bytes after the rescan, less than the %d asked for",
                        luns[0][1], size, new_size)
        self.host.block_resize(domain, dev, size)
        return size
