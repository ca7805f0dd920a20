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

The host side (discovery, node records, login, devices, logout) is
:class:`hvplug.initiator.connectors.iscsi.ISCSIConnector`; this driver
gives it the ``[libvirt]`` settings and puts the device it hands out (a
``DeviceInfo``: path, iface, multipath, one ``ISCSIPath`` per logged-in
portal) into the guest.
"""

from hvplug import connection_schema
from hvplug.conf import CONF
from hvplug.connection_schema import iscsi_targets
from hvplug.initiator.connectors.iscsi import ISCSIConnector, auth_settings, volume_data_from_device
from hvplug.initiator.devices import Devices
from hvplug.initiator.iface import DEFAULT_IFACE
from hvplug.initiator.iscsiadm import NODES_DIR
from hvplug.virt import config
from hvplug.virt.volume.base import LibvirtBaseBlockVolumeDriver


class LibvirtISCSIVolumeDriver(LibvirtBaseBlockVolumeDriver):
    """iSCSI volumes logged in by the host, attached as ``<disk type='block'>``."""

    driver_volume_type = "iscsi"
    data_shape = connection_schema.ISCSI
    nodes_dir = NODES_DIR

    def __init__(self, host, execute=None, *, sysfs_root: str | None = None,
                 dev_root: str | None = None, nodes_dir: str | None = None, sleep=None):
        super().__init__(host, execute, sysfs_root=sysfs_root, dev_root=dev_root)
        self.nodes_dir = nodes_dir or self.nodes_dir
        self.sleep = sleep
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

    @property
    def connector(self) -> ISCSIConnector:
        return ISCSIConnector(
            self.execute, iface=self.configured_iface(),
            iface_fallback=CONF.libvirt.iscsi_iface_fallback,
            use_multipath=self.use_multipath(), scan_tries=self.scan_tries(),
            login_timeout=CONF.libvirt.iscsi_login_timeout, sysfs_root=self.sysfs_root,
            dev_root=self.dev_root, nodes_dir=self.nodes_dir, sleep=self.sleep,
            warned=self._warned)

    # -- recognising attached disks ------------------------------------------
    @classmethod
    def handles_disk(cls, disk: config.LibvirtConfigGuestDisk) -> bool:
        return (disk.source_type == "block" and bool(disk.source_path)
                and bool(Devices(cls.dev_root, cls.sysfs_root)
                         .disk_targets(disk.source_path)))

    @classmethod
    def connection_info_from_disk(cls, disk: config.LibvirtConfigGuestDisk) -> dict:
        data = volume_data_from_device(Devices(cls.dev_root, cls.sysfs_root),
                                       disk.source_path)
        return {"driver_volume_type": cls.driver_volume_type, "data": data,
                "serial": disk.serial}
