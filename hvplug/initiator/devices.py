"""Block devices of host-attached iSCSI LUNs: by-path links, multipath, sysfs.

udev names a LUN ``/dev/disk/by-path/[pci-<hba>-]ip-<address>:<port>-iscsi-
<iqn>-lun-<lun>``; offload HBAs and iSER add the ``pci-`` prefix, so links
are matched by pattern.  ``dev_root`` and ``sysfs_root`` are injectable so
tests run against fake trees.
"""

import os
import re
from pathlib import Path

from hvplug import exception
from hvplug.connection_schema import ISCSITarget
from hvplug.initiator.iscsiadm import normal_host
from hvplug.utils import portals

# udev's path_id: [pci-<hba>-]ip-<address>:<port>-iscsi-<iqn>-lun-<lun>
_BY_PATH = re.compile(r"(?:^|-)ip-(?P<portal>.+?)-iscsi-(?P<iqn>.+)-lun-(?P<lun>\d+)$")


def lun_key(target: ISCSITarget) -> tuple[str, int, str, int]:
    """``target`` as a comparable key: IPv6 spellings and IQN case folded."""
    return normal_host(target.host), target.port, target.iqn.lower(), target.lun


def parse_by_path(name: str) -> ISCSITarget | None:
    """The LUN a ``/dev/disk/by-path`` name points at, or None if not iSCSI."""
    match = _BY_PATH.search(name)
    if not match:
        return None
    portal = match["portal"]
    if portal.startswith("["):
        host, port = portals.parse_portal(portal)
    else:  # udev writes IPv6 addresses without brackets: the port is after the last colon
        host, _, port_text = portal.rpartition(":")
        if not host or not port_text.isdigit():
            return None
        port = int(port_text)
    return ISCSITarget(host, port, match["iqn"], int(match["lun"]))


class Devices:
    """The block devices of iSCSI LUNs, as udev (``dev_root``) and sysfs show them."""

    def __init__(self, dev_root: str, sysfs_root: str):
        self.dev_root = Path(dev_root)
        self.sysfs_root = Path(sysfs_root)
        self.by_path_dir = self.dev_root / "disk" / "by-path"

    def by_path_link(self, target: ISCSITarget) -> Path:
        """udev's name for a software-initiator LUN (IPv6 without brackets)."""
        return self.by_path_dir / _by_path_name(target.host, target)

    def by_path_pattern(self, target: ISCSITarget) -> str:
        return str(self.by_path_dir / f"*{_by_path_name(target.host, target)}")

    def by_path_links(self, target: ISCSITarget) -> list[Path]:
        """Every link to the LUN; offload HBAs prefix theirs with ``pci-...-``."""
        names = {_by_path_name(target.host, target), _by_path_name(f"[{target.host}]", target)}
        try:
            entries = sorted(os.listdir(self.by_path_dir))
        except FileNotFoundError:
            return []
        return [self.by_path_dir / entry for entry in entries
                if entry in names or any(entry.endswith(f"-{name}") for name in names)]

    @staticmethod
    def block_name(path: str | Path) -> str:
        """``sdb`` for ``/dev/disk/by-path/...`` -> ``../../sdb``."""
        return Path(os.path.realpath(path)).name

    def is_dm(self, path: str | Path) -> bool:
        return self.block_name(path).startswith("dm-")

    def multipath_holder(self, path: str | Path) -> str | None:
        """``dm-N`` when a device-mapper map holds the disk at ``path``."""
        holders = self.sysfs_root / "block" / self.block_name(path) / "holders"
        found = sorted(h for h in _listdir(holders) if h.startswith("dm-"))
        return found[0] if found else None

    def dm_name(self, dm: str) -> str:
        name_file = self.sysfs_root / "block" / dm / "dm" / "name"
        return name_file.read_text().strip() if name_file.is_file() else dm

    def dm_path(self, dm: str) -> Path:
        """``/dev/mapper/<name>`` (stable across reboots) when udev made it."""
        mapper = self.dev_root / "mapper" / self.dm_name(dm)
        return mapper if mapper.exists() else self.dev_root / dm

    def delete_scsi_device(self, link: str | Path) -> None:
        """``echo 1 > /sys/block/sdX/device/delete``: the kernel flushes and drops it."""
        delete = self.sysfs_root / "block" / self.block_name(link) / "device" / "delete"
        if delete.parent.is_dir():
            delete.write_text("1")

    def size_bytes(self, block: str) -> int:
        size = self.sysfs_root / "block" / block / "size"
        try:
            return int(size.read_text()) * 512  # sysfs counts 512-byte sectors
        except (OSError, ValueError) as exc:
            raise exception.DeviceSizeUnreadable(block=block, path=size,
                                                 reason=str(exc)) from None

    def session_iface(self, sid: int) -> str | None:
        """The iface the kernel says session ``sid`` uses, when sysfs shows it."""
        path = self.sysfs_root / "class" / "iscsi_session" / f"session{sid}" / "ifacename"
        return path.read_text().strip() if path.is_file() else None

    def disk_targets(self, path: str) -> list[ISCSITarget]:
        """The iSCSI LUNs behind a disk's source: a by-path link or a multipath map."""
        source = Path(path)
        if source.parent == self.by_path_dir:
            target = parse_by_path(source.name)
            return [target] if target else []
        if not source.is_relative_to(self.dev_root) or not self.is_dm(source):
            return []
        slaves = set(_listdir(self.sysfs_root / "block" / self.block_name(source) / "slaves"))
        found = []
        for entry in sorted(_listdir(self.by_path_dir)):
            target = parse_by_path(entry)
            if target and self.block_name(self.by_path_dir / entry) in slaves:
                found.append(target)
        return found


def _by_path_name(host: str, target: ISCSITarget) -> str:
    return f"ip-{host}:{target.port}-iscsi-{target.iqn}-lun-{target.lun}"


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []

