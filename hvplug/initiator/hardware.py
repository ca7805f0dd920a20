"""What sysfs shows of this host's iSCSI hardware: offload HBAs, NICs, RDMA devices.

open-iscsi names an offload iface ``<transport>.<hwaddress>`` after the
``iscsi_host`` the adapter's driver registers
(``/sys/class/iscsi_host/hostN/hwaddress``); the driver is the SCSI host's
``proc_name`` (``/sys/class/scsi_host/hostN/proc_name``, ``iscsi_`` prefix
dropped, as iscsiadm does).  When no such host is registered yet (driver not
loaded), a NIC with that MAC from the transport's PCI vendor
(``/sys/class/net/DEV/device/vendor``) is the hardware.  iSER needs an RDMA
device (``/sys/class/infiniband/*``).  ``sysfs_root`` other than ``/sys``
reads a fake tree (tests, ``hvplug iface ... --sysfs-root``).
"""

import dataclasses
import re
from pathlib import Path

from hvplug import exception

SOFTWARE_TRANSPORTS = ("tcp", "iser")
OFFLOAD_VENDORS = {  # transport -> PCI vendor id of the adapters that run it
    "cxgb3i": "0x1425", "cxgb4i": "0x1425",
    "qla4xxx": "0x1077", "qedi": "0x1077",
    "bnx2i": "0x14e4",
    "be2iscsi": "0x10df", "ocs": "0x10df",
}
TRANSPORTS = SOFTWARE_TRANSPORTS + tuple(OFFLOAD_VENDORS)
VENDOR_NAMES = {"0x1425": "Chelsio", "0x1077": "QLogic", "0x14e4": "Broadcom",
                "0x10df": "Emulex", "0x15b3": "Mellanox"}
# The kernel module behind each transport, for messages; ocs's differs by release.
KERNEL_MODULES = {"tcp": "iscsi_tcp", "iser": "ib_iser", "cxgb3i": "cxgb3i",
                  "cxgb4i": "cxgb4i", "qla4xxx": "qla4xxx", "qedi": "qedi",
                  "bnx2i": "bnx2i", "be2iscsi": "be2iscsi"}
_KERNEL_IFACE = re.compile(r"^ipv([46])-iface-(\d+)-(\d+)$")


@dataclasses.dataclass(frozen=True)
class IscsiHost:
    """One ``/sys/class/iscsi_host/hostN`` entry."""

    host: str
    transport: str | None
    hwaddress: str | None
    ipaddress: str | None = None
    netdev: str | None = None
    initiatorname: str | None = None
    kernel_ifaces: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Nic:
    name: str
    address: str
    vendor: str | None


def vendor_label(vendor: str | None) -> str:
    if not vendor:
        return "unknown vendor"
    return f"{VENDOR_NAMES.get(vendor, 'vendor')} {vendor}"


class Hardware:
    """Reads sysfs under ``sysfs_root``; never writes."""

    def __init__(self, sysfs_root: str = "/sys"):
        self.root = Path(sysfs_root)

    def _read(self, path: Path) -> str | None:
        try:
            value = path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return value or None

    def _entries(self, cls: str) -> list[Path]:
        try:
            return sorted(self.root.joinpath("class", cls).iterdir())
        except OSError:
            return []

    def iscsi_hosts(self) -> list[IscsiHost]:
        kernel_ifaces: dict[str, list[str]] = {}
        for entry in self._entries("iscsi_iface"):
            match = _KERNEL_IFACE.match(entry.name)
            if match:
                kernel_ifaces.setdefault(f"host{match.group(2)}", []).append(entry.name)
        hosts = []
        for entry in self._entries("iscsi_host"):
            proc_name = self._read(self.root / "class" / "scsi_host" / entry.name / "proc_name")
            if proc_name and proc_name.startswith("iscsi_"):
                proc_name = proc_name[len("iscsi_"):]
            hosts.append(IscsiHost(
                host=entry.name, transport=proc_name,
                hwaddress=self._read(entry / "hwaddress"),
                ipaddress=self._read(entry / "ipaddress"),
                netdev=self._read(entry / "netdev"),
                initiatorname=self._read(entry / "initiatorname"),
                kernel_ifaces=tuple(kernel_ifaces.get(entry.name, ()))))
        return hosts

    def nics(self) -> list[Nic]:
        return [Nic(entry.name, (self._read(entry / "address") or "").lower(),
                    (self._read(entry / "device" / "vendor") or "").lower() or None)
                for entry in self._entries("net")]

    def rdma_devices(self) -> list[str]:
        return [entry.name for entry in self._entries("infiniband")]

    def transport_loaded(self, transport: str) -> bool:
        """Whether the kernel registered ``transport`` (iscsiadm needs it to update records)."""
        name = "tcp" if transport == "default" else transport
        return self.root.joinpath("class", "iscsi_transport", name).is_dir()

    def find(self, transport: str, hwaddress: str | None) -> str:
        """Describe the hardware ``transport`` would use at ``hwaddress``.

        Raises IfaceHardwareNotFound naming the transport, the address and
        what was found instead.
        """
        if transport in ("tcp", "default"):
            return "software iSCSI over TCP (no hardware needed)"
        if transport == "iser":
            return self._find_rdma(hwaddress)
        if not hwaddress:
            raise exception.IfaceHardwareNotFound(
                transport=transport, hwaddress="(no hwaddress)",
                reason="an offload iface is bound to its adapter by MAC; give the hwaddress")
        mac = hwaddress.lower()
        notes = []
        for host in self.iscsi_hosts():
            if (host.hwaddress or "").lower() != mac:
                continue
            if host.transport in (None, transport):
                return f"iscsi_host {host.host}" + (f" ({host.transport})" if host.transport else "")
            notes.append(f"it is iscsi_host {host.host}'s, which runs transport {host.transport}")
        vendor = OFFLOAD_VENDORS[transport]
        for nic in self.nics():
            if nic.address != mac:
                continue
            if nic.vendor == vendor:
                return f"NIC {nic.name} ({vendor_label(vendor)})"
            notes.append(f"it is NIC {nic.name}'s, whose PCI vendor is "
                         f"{vendor_label(nic.vendor)}, not {vendor_label(vendor)}")
        reason = "; ".join(notes) or (
            f"no iscsi_host under {self.root}/class/iscsi_host and no "
            f"{vendor_label(vendor)} NIC under {self.root}/class/net has that address")
        raise exception.IfaceHardwareNotFound(transport=transport, hwaddress=mac, reason=reason)

    def _find_rdma(self, hwaddress: str | None) -> str:
        devices = self.rdma_devices()
        if not devices:
            raise exception.IfaceHardwareNotFound(
                transport="iser", hwaddress=hwaddress or "any address",
                reason=f"no RDMA device under {self.root}/class/infiniband (load the "
                "adapter's RDMA driver, e.g. mlx5_ib, and ib_iser)")
        if not hwaddress:
            return f"RDMA device {', '.join(devices)}"
        mac = hwaddress.lower()
        for nic in self.nics():
            if nic.address == mac:
                return f"NIC {nic.name} with RDMA device {', '.join(devices)}"
        raise exception.IfaceHardwareNotFound(
            transport="iser", hwaddress=mac,
            reason=f"no NIC under {self.root}/class/net has that address "
            f"(RDMA devices: {', '.join(devices)})")

    def offload_records(self) -> list[dict]:
        """The iface records iscsiadm generates for offload hosts, as field dicts.

        Like open-iscsi's ``iface_setup_host_bindings``: hosts of software
        transports and hosts without a hwaddress get none; a host with
        kernel ifaces (``ipv4-iface-H-N``, e.g. qla4xxx) gets one record per
        kernel iface, ``<transport>.<hwaddress>.<ipv4|ipv6>.<N>``; any other
        host gets ``<transport>.<hwaddress>``.
        """
        records: list[dict[str, str | None]] = []
        for host in self.iscsi_hosts():
            if not host.transport or host.transport in SOFTWARE_TRANSPORTS or not host.hwaddress:
                continue
            base = {"transport": host.transport, "hwaddress": host.hwaddress, "host": host.host}
            if not host.kernel_ifaces:
                records.append({"name": f"{host.transport}.{host.hwaddress}", **base})
            for kern in host.kernel_ifaces:
                match = _KERNEL_IFACE.match(kern)
                if match is None:  # not an iface name the kernel gives: not ours to read
                    continue
                version, _host_no, num = match.groups()
                ipaddress = self._read(self.root / "class" / "iscsi_iface" / kern / "ipaddress")
                records.append({"name": f"{host.transport}.{host.hwaddress}.ipv{version}.{num}",
                                **base, "ipaddress": ipaddress})
        return records
