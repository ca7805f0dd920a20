"""Fibre Channel host attach through os-brick's FC scan.

os-brick's ``FibreChannelConnector`` scans the HBAs for the LUN and returns
its ``/dev/disk/by-path/pci-<hba>-fc-0x<wwn>-lun-<lun>`` link (or the
multipath device over every path).  os-brick is imported here only, on
first use: ``hvplug`` itself and this module load without it
(doc/fibre-channel.md).  ``props`` is ``connection_info["data"]`` as Cinder's
FC drivers (and the X-IO ISE one) return it::

    {"target_discovered": true,
     "target_wwn": ["5001f4a0c0d10001", "5001f4a0c0d10002"],
     "target_lun": 1,
     "initiator_target_map": {"21000024ff4b9a3c": ["5001f4a0c0d10001",
                                                 "5001f4a0c0d10002"]}}

``target_wwn`` may be a single string; ``target_wwns``/``target_luns`` are
accepted too.
"""

import copy
import logging
import os
import re
from collections.abc import Callable, Collection
from pathlib import Path

from hvplug import exception
from hvplug.connection_schema import FcLun, fc_luns
from hvplug.initiator.connectors.base import DeviceInfo, InitiatorConnector, LunKey, host_wwpns
from hvplug.initiator.devices import Devices
from hvplug.utils import executor, fileutils

LOG = logging.getLogger(__name__)

# Where os-brick's file locks go when [oslo_concurrency] lock_path is unset.
LOCK_DIR = "/var/lib/hvplug/locks"
# udev's path_id for FC: [platform-...-]pci-<hba>-fc-0x<wwpn>-lun-<lun>
_BY_PATH = re.compile(r"-fc-0x(?P<wwn>[0-9a-fA-F]{16})-lun-(?P<lun>\d+)$")


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
        if lun is None:
            return []
        wwid = _wwid(devices, devices.block_name(source))
        if wwid is None:
            return [lun]
        return sorted({lun} | {other for link, other in _fc_links(devices)
                               if _wwid(devices, devices.block_name(link)) == wwid})
    if not source.is_relative_to(devices.dev_root) or not devices.is_dm(source):
        return []
    slaves = devices.sysfs_root / "block" / devices.block_name(source) / "slaves"
    names = set(os.listdir(slaves)) if slaves.is_dir() else set()
    return [lun for link, lun in _fc_links(devices) if devices.block_name(link) in names]


def volume_data_from_device(devices: Devices, path: str) -> dict | None:
    """Enough ``connection_info["data"]`` to disconnect the FC volume behind
    block device ``path``; None when no FC LUN is behind it."""
    luns = disk_luns(devices, path)
    if not luns:
        return None
    data: dict = {"target_wwn": [w for w, _ in luns], "target_lun": luns[0][1],
                  "target_discovered": True, "device_path": path}
    if len({lun for _, lun in luns}) > 1:
        data["target_luns"] = [lun for _, lun in luns]
    return data


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
    from hvplug.conf import CONF

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


# -- the connector -------------------------------------------------------------------

class FibreChannelConnector(InitiatorConnector):
    """FC LUNs through the host's HBAs, os-brick doing the scan.

    ``brick_factory(execute, use_multipath, scan_tries, lock_dir)`` makes the
    os-brick connector, on first use (tests pass a fake of the same shape).
    """

    protocol = "fibre_channel"

    def __init__(self, execute: Callable | None = None, *, use_multipath: bool = False,
                 scan_tries: int = 3, lock_dir: str = LOCK_DIR, sysfs_root: str = "/sys",
                 dev_root: str = "/dev", brick_factory: Callable = os_brick_connector):
        self.execute = execute or executor.execute
        self.use_multipath = use_multipath
        self.scan_tries = scan_tries
        self.lock_dir = lock_dir
        self.sysfs_root = sysfs_root
        self.devices = Devices(dev_root, sysfs_root)
        self.brick_factory = brick_factory
        self._brick = None

    @property
    def brick(self):
        if self._brick is None:
            self._brick = self.brick_factory(self.execute, self.use_multipath,
                                             self.scan_tries, self.lock_dir)
        return self._brick

    def host_wwpns(self) -> list[str]:
        return host_wwpns(self.sysfs_root)

    @property
    def fc_host_dir(self) -> str:
        return str(Path(self.sysfs_root) / "class" / "fc_host")

    @staticmethod
    def _brick_props(props: dict) -> dict:
        """A copy for os-brick, which rewrites what it is given.

        os-brick writes ``0x<wwn>`` into the by-path names it looks for, so a
        WWN given as ``0x...`` loses its prefix here.
        """
        copied = copy.deepcopy(props)
        for key in ("target_wwn", "target_wwns"):
            value = copied.get(key)
            if isinstance(value, str):
                copied[key] = _no_0x(value)
            elif isinstance(value, list):
                copied[key] = [_no_0x(w) for w in value]
        return copied

    @staticmethod
    def _describe(luns: list[FcLun]) -> dict:
        return {"lun": luns[0][1], "wwns": ", ".join(w for w, _ in luns)}

    def _call(self, action: str, method, *args, luns: list[FcLun], wwpns=None):
        """Run an os-brick call; its errors become hvplug's, naming the fix."""
        from os_brick import exception as brick

        try:
            return method(*args)
        except brick.NoFibreChannelHostsFound:
            raise exception.FibreChannelNoHBA(fc_host_dir=self.fc_host_dir,
                                              **self._describe(luns)) from None
        except (brick.NoFibreChannelVolumeDeviceFound, brick.VolumePathsNotFound) as exc:
            raise exception.FibreChannelDeviceNotFound(
                reason=str(exc).rstrip("."), wwpns=", ".join(wwpns or self.host_wwpns()) or "none",
                **self._describe(luns)) from None
        except brick.BrickException as exc:
            raise exception.FibreChannelFailed(action=action, reason=str(exc)) from None

    # -- the contract ----------------------------------------------------------------
    def connect_volume(self, props: dict) -> DeviceInfo:
        luns = fc_luns(props)
        wwpns = self.host_wwpns()
        if not wwpns:
            raise exception.FibreChannelNoHBA(fc_host_dir=self.fc_host_dir,
                                              **self._describe(luns))
        mapped = props.get("initiator_target_map") or {}
        if mapped and not {w.lower() for w in mapped} & set(wwpns):
            LOG.warning("initiator_target_map names %s, none of this host's WWPNs (%s); "
                        "os-brick will scan every HBA", ", ".join(mapped), ", ".join(wwpns))
        info = self._call("connect", self.brick.connect_volume, self._brick_props(props),
                          luns=luns, wwpns=wwpns)
        LOG.info("FC LUN %s of %s attached on this host as %s",
                 luns[0][1], luns[0][0], info["path"])
        return DeviceInfo(path=info["path"], scsi_wwn=info.get("scsi_wwn"),
                          multipath=bool(info.get("multipath_id")))

    def disconnect_volume(self, props: dict, device_info: DeviceInfo | None,
                          in_use: Collection[LunKey] = ()) -> None:
        path = device_info.path if device_info else props.get("device_path")
        self._call("disconnect", self.brick.disconnect_volume, self._brick_props(props),
                   {"type": "block", "path": path}, luns=fc_luns(props))

    def extend_volume(self, props: dict) -> int:
        size = self._call("extend", self.brick.extend_volume, self._brick_props(props),
                          luns=fc_luns(props))
        return size or self.devices.size_bytes(self.devices.block_name(self.device_path(props)))

    def device_path(self, props: dict) -> str:
        """The recorded device, else the LUN's existing by-path link."""
        found = props.get("device_path") or self.existing_device(props)
        if found:
            return found
        raise exception.InvalidConnectionInfo(
            reason="data.device_path is missing and no by-path link of the LUN exists; "
                   "connect the volume first")

    def existing_device(self, props: dict) -> str | None:
        """The by-path link of the LUN if this host has it attached already."""
        wanted = set(fc_luns(props))
        return next((str(link) for link, lun in _fc_links(self.devices) if lun in wanted), None)

    def volume_luns(self, props: dict) -> list[LunKey]:
        return list(fc_luns(props))

    def luns_of(self, path: str) -> list[LunKey]:
        return list(disk_luns(self.devices, path))
