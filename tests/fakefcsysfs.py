"""A fake Fibre Channel host: sysfs and /dev trees, and a connector acting on them.

    fc = FakeFcHost(tmp_path)
    fc.add_hba(5, "21000024ff4b9a3c", pci="0000:05:00.2")   # /sys/class/fc_host/host5
    fc.add_target_port(5, 0, 0, "5001f4a0c0d10001")       # fc_transport + fc_remote_ports
    fc.zone("5001f4a0c0d10001", lun=1)                    # the array maps LUN 1 there
    LibvirtFibreChannelVolumeDriver(host, sysfs_root=str(fc.sys), dev_root=str(fc.dev))

What it writes, as the kernel and udev lay it out:

- ``sys/devices/pci0000:00/0000:00:03.0/<pci>/hostN/fc_host/hostN/{port_name,node_name,
  port_state}`` with ``sys/class/fc_host/hostN`` a symlink to it (os-brick takes the
  HBA's PCI address from that real path), and ``sys/class/scsi_host/hostN/scan``;
- ``sys/class/fc_transport/targetH:C:T/port_name`` and
  ``sys/class/fc_remote_ports/rport-H:C-T/{port_name,scsi_target_id}``;
- for each LUN reached through an HBA: ``dev/sdX`` (a file), the udev link
  ``dev/disk/by-path/pci-<pci>-fc-0x<wwn>-lun-<lun>`` -> ``../../sdX``, and
  ``sys/block/sdX/{size,holders/,device/}``;
- ``multipath(...)``: ``sys/block/dm-N/{dm/name,slaves/,size}``, ``dev/dm-N`` and
  ``dev/mapper/<name>``.

``FakeFcConnector`` stands in for os-brick's FibreChannelConnector (same
methods, same results and exceptions) for tests of hvplug's own logic.
"""

import copy
import os
import string
from pathlib import Path

SECTORS = 2 * 1024 * 1024  # a 1 GiB LUN, as sysfs counts it


class FakeFcHost:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.sys = self.root / "sys"
        self.dev = self.root / "dev"
        self.by_path = self.dev / "disk" / "by-path"
        self.by_path.mkdir(parents=True, exist_ok=True)
        (self.sys / "class" / "fc_host").mkdir(parents=True, exist_ok=True)
        self.hbas: dict[int, tuple[str, str]] = {}  # host number -> (wwpn, pci)
        self.sizes: dict[tuple[str, int], int] = {}  # what the array says each LUN holds
        self._disks = 0

    def _write(self, path: Path, value) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")

    def add_hba(self, host_no: int, wwpn: str, pci: str = "0000:05:00.2",
                state: str = "Online") -> None:
        device = (self.sys / "devices" / "pci0000:00" / "0000:00:03.0" / pci
                  / f"host{host_no}" / "fc_host" / f"host{host_no}")
        self._write(device / "port_name", f"0x{wwpn}")
        self._write(device / "node_name", f"0x{wwpn[:1]}0{wwpn[2:]}")
        self._write(device / "port_state", state)
        os.symlink(os.path.relpath(device, self.sys / "class" / "fc_host"),
                   self.sys / "class" / "fc_host" / f"host{host_no}")
        self._write(self.sys / "class" / "scsi_host" / f"host{host_no}" / "scan", "")
        self.hbas[host_no] = (wwpn, pci)

    def add_target_port(self, host_no: int, channel: int, target: int, wwpn: str) -> None:
        self._write(self.sys / "class" / "fc_transport" / f"target{host_no}:{channel}:{target}"
                    / "port_name", f"0x{wwpn}")
        rport = self.sys / "class" / "fc_remote_ports" / f"rport-{host_no}:{channel}-{target}"
        self._write(rport / "port_name", f"0x{wwpn}")
        self._write(rport / "scsi_target_id", target)

    def link_name(self, host_no: int, wwn: str, lun: int) -> str:
        return f"pci-{self.hbas[host_no][1]}-fc-0x{wwn}-lun-{lun}"

    def zone(self, wwn: str, lun: int, hosts: tuple[int, ...] | None = None) -> list[Path]:
        """The LUN's disk through each HBA (all by default): what a scan would find."""
        links = []
        for host_no in hosts if hosts is not None else sorted(self.hbas):
            disk = f"sd{string.ascii_lowercase[self._disks]}"
            self._disks += 1
            sectors = self.sizes.get((wwn, lun), SECTORS)
            (self.dev / disk).write_text("")
            os.truncate(self.dev / disk, sectors * 512)  # what QEMU's block_resize reads
            self._write(self.sys / "block" / disk / "size", sectors)
            (self.sys / "block" / disk / "holders").mkdir()
            (self.sys / "block" / disk / "device").mkdir()
            (self.sys / "block" / disk / "device" / "delete").write_text("")
            # one LUN, one identifier, whichever target port shows it
            self._write(self.sys / "block" / disk / "device" / "wwid",
                        f"naa.6001f4a0c0d10000000000000000{lun:04x}")
            link = self.by_path / self.link_name(host_no, wwn, lun)
            os.symlink(f"../../{disk}", link)
            links.append(link)
        return links

    def multipath(self, links: list[Path], name: str = "mpatha") -> Path:
        dm = f"dm-{len(list(self.sys.glob('block/dm-*')))}"
        self._write(self.sys / "block" / dm / "dm" / "name", name)
        self._write(self.sys / "block" / dm / "size", SECTORS)
        (self.sys / "block" / dm / "slaves").mkdir()
        for link in links:
            disk = Path(os.path.realpath(link)).name
            (self.sys / "block" / dm / "slaves" / disk).touch()
            (self.sys / "block" / disk / "holders" / dm).touch()
        (self.dev / dm).write_text("")
        os.truncate(self.dev / dm, SECTORS * 512)
        (self.dev / "mapper").mkdir(exist_ok=True)
        os.symlink(f"../{dm}", self.dev / "mapper" / name)
        return self.dev / "mapper" / name

    def grow(self, wwn: str, lun: int, sectors: int) -> None:
        self.sizes[(wwn, lun)] = sectors

    def deleted_disks(self) -> list[str]:
        return sorted(p.parts[-3] for p in self.sys.glob("block/sd*/device/delete")
                      if p.read_text().strip() == "1")

    def links(self) -> list[str]:
        return sorted(p.name for p in self.by_path.iterdir())


class FakeFcConnector:
    """os-brick's FibreChannelConnector over a FakeFcHost; records every call.

    It pairs WWNs and LUNs as os-brick does, lower-cases them in the dict it
    is given (so a caller that passes its own data sees it rewritten), and
    raises os-brick's own exceptions.
    """

    def __init__(self, fc: FakeFcHost, use_multipath: bool = False):
        self.fc = fc
        self.use_multipath = use_multipath
        self.calls: list[tuple[str, dict]] = []

    def _links(self, props: dict) -> list[Path]:
        wwns = props.get("target_wwns") or props["target_wwn"]
        wwns = [wwns] if isinstance(wwns, str) else wwns
        props["target_wwn"] = [w.lower() for w in wwns]  # what os-brick does to its input
        luns = props.get("target_luns") or [props["target_lun"]] * len(wwns)
        return [link for wwn, lun in zip(props["target_wwn"], luns, strict=True)
                for host_no in sorted(self.fc.hbas)
                if (link := self.fc.by_path / self.fc.link_name(host_no, wwn, lun)).exists()]

    def connect_volume(self, props: dict) -> dict:
        from os_brick import exception as brick

        self.calls.append(("connect_volume", copy.deepcopy(props)))
        if not self.fc.hbas:
            raise brick.NoFibreChannelHostsFound()
        links = self._links(props)
        if not links:
            raise brick.NoFibreChannelVolumeDeviceFound()
        info = {"type": "block", "path": str(links[0]), "scsi_wwn": "36001f4a0c0d1000100000000"}
        holders = self.fc.sys / "block" / Path(os.path.realpath(links[0])).name / "holders"
        dms = sorted(holders.iterdir()) if holders.is_dir() else []
        if self.use_multipath and dms:
            name = (self.fc.sys / "block" / dms[0].name / "dm" / "name").read_text().strip()
            info.update(path=str(self.fc.dev / "mapper" / name), multipath_id=name)
        return info

    def disconnect_volume(self, props: dict, device_info: dict, force: bool = False,
                          ignore_errors: bool = False) -> None:
        self.calls.append(("disconnect_volume", copy.deepcopy(props)))
        for link in self._links(props):
            disk = Path(os.path.realpath(link)).name
            (self.fc.sys / "block" / disk / "device" / "delete").write_text("1")
            link.unlink()

    def extend_volume(self, props: dict) -> int | None:
        from os_brick import exception as brick

        self.calls.append(("extend_volume", copy.deepcopy(props)))
        links = self._links(props)
        if not links:
            raise brick.VolumePathsNotFound()
        wwn, lun = props["target_wwn"][0], props.get("target_lun", 0)
        sectors = self.fc.sizes.get((wwn, lun), SECTORS)
        for link in links:
            disk = Path(os.path.realpath(link)).name
            (self.fc.sys / "block" / disk / "size").write_text(f"{sectors}\n")
            os.truncate(self.fc.dev / disk, sectors * 512)
        return sectors * 512
