"""A fake sysfs tree of iSCSI hardware, for ``sysfs_root=`` / ``--sysfs-root``.

    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.add_iscsi_host(5, "cxgb4i", "00:07:43:28:b2:58", ipaddress="10.0.0.5", netdev="eth2")
    sysfs.add_nic("eth3", "00:07:43:28:b2:60", vendor="0x1425")   # a Chelsio NIC, no iscsi_host
    sysfs.add_rdma_device("mlx5_0")                                 # for iSER
    sysfs.add_transport("tcp")                                      # kernel transport loaded
    IfaceManager(execute=fake, sysfs_root=str(sysfs.root))

What it writes, as the kernel lays it out (plain directories where the
kernel has symlinks; readers only follow paths):

- ``class/iscsi_host/hostN/{hwaddress,ipaddress,netdev,initiatorname}`` and
  ``class/scsi_host/hostN/proc_name`` (the driver: ``cxgb4i``, ``qla4xxx``;
  ``iscsi_tcp``/``iscsi_iser`` for the software transports, as the kernel names them)
- ``class/iscsi_iface/ipv4-iface-N-M/ipaddress`` (qla4xxx-style kernel ifaces)
- ``class/net/DEV/address`` and ``class/net/DEV/device/vendor`` (PCI vendor id)
- ``class/infiniband/DEV`` (RDMA devices)
- ``class/iscsi_transport/NAME`` (a loaded kernel transport)

``add_offload(transport, mac)`` adds the usual whole adapter for a transport:
its NIC (right PCI vendor) and its iscsi_host.
"""

from pathlib import Path

VENDORS = {"cxgb3i": "0x1425", "cxgb4i": "0x1425", "qla4xxx": "0x1077", "qedi": "0x1077",
           "bnx2i": "0x14e4", "be2iscsi": "0x10df", "ocs": "0x10df", "iser": "0x15b3"}
PROC_NAMES = {"tcp": "iscsi_tcp", "iser": "iscsi_iser"}


class FakeSysfs:
    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._nics = 0

    def _write(self, relative: str, value) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")

    def add_iscsi_host(self, host_no: int, transport: str | None, hwaddress: str | None,
                       ipaddress: str | None = None, netdev: str | None = None,
                       initiatorname: str | None = None) -> str:
        """``/sys/class/iscsi_host/hostN``; ``transport`` None leaves proc_name out."""
        host = f"host{host_no}"
        (self.root / "class" / "iscsi_host" / host).mkdir(parents=True, exist_ok=True)
        for key, value in (("hwaddress", hwaddress), ("ipaddress", ipaddress),
                           ("netdev", netdev), ("initiatorname", initiatorname)):
            if value is not None:
                self._write(f"class/iscsi_host/{host}/{key}", value)
        if transport is not None:
            self._write(f"class/scsi_host/{host}/proc_name", PROC_NAMES.get(transport, transport))
        return host

    def add_kernel_iface(self, host_no: int, num: int = 0, version: int = 4,
                         ipaddress: str | None = None) -> str:
        name = f"ipv{version}-iface-{host_no}-{num}"
        (self.root / "class" / "iscsi_iface" / name).mkdir(parents=True, exist_ok=True)
        if ipaddress is not None:
            self._write(f"class/iscsi_iface/{name}/ipaddress", ipaddress)
        return name

    def add_nic(self, dev: str, address: str, vendor: str | None = None) -> None:
        self._write(f"class/net/{dev}/address", address)
        if vendor is not None:
            self._write(f"class/net/{dev}/device/vendor", vendor)

    def add_rdma_device(self, name: str = "mlx5_0") -> None:
        (self.root / "class" / "infiniband" / name).mkdir(parents=True, exist_ok=True)

    def add_transport(self, *names: str) -> None:
        for name in names:
            (self.root / "class" / "iscsi_transport" / name).mkdir(parents=True, exist_ok=True)

    def add_offload(self, transport: str, hwaddress: str, host_no: int | None = None,
                    ipaddress: str | None = None) -> str:
        """A whole adapter: its NIC (PCI vendor of ``transport``) and its iscsi_host."""
        self._nics += 1
        dev = f"eth{10 + self._nics}"
        self.add_nic(dev, hwaddress.lower(), VENDORS[transport])
        host_no = host_no if host_no is not None else 10 + self._nics
        return self.add_iscsi_host(host_no, transport, hwaddress.lower(),
                                   ipaddress=ipaddress, netdev=dev)
