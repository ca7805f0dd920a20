"""Host-attached Fibre Channel: os-brick finds the LUN, the guest gets the block device.

The host side is
:class:`hvplug.initiator.connectors.fibre_channel.FibreChannelConnector`:
os-brick's FC connector scans the HBAs for the LUN and hands out its
``/dev/disk/by-path/pci-<hba>-fc-0x<wwn>-lun-<lun>`` link (or the multipath
device over every path); the guest gets ``<disk type='block'>`` on it.
os-brick is imported on first use only: ``hvplug`` itself and this module
load without it (doc/fibre-channel.md).

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
accepted too.
"""

from hvplug import connection_schema
from hvplug.conf import CONF
from hvplug.connection_schema import fc_luns
from hvplug.initiator.connectors import fibre_channel as fc_connector
from hvplug.initiator.connectors.fibre_channel import (
    LOCK_DIR,
    FibreChannelConnector,
    disk_luns,
    os_brick_connector,
)
from hvplug.initiator.devices import Devices
from hvplug.virt import config
from hvplug.virt.volume.base import LibvirtBaseBlockVolumeDriver


class LibvirtFibreChannelVolumeDriver(LibvirtBaseBlockVolumeDriver):
    """FC volumes attached by the host through os-brick, as ``<disk type='block'>``."""

    driver_volume_type = "fibre_channel"
    data_shape = connection_schema.FIBRE_CHANNEL
    lock_dir = LOCK_DIR
    # How the os-brick connector is made: (execute, use_multipath, scan_tries, lock_dir).
    connector_factory = staticmethod(os_brick_connector)

    def __init__(self, host, execute=None, *, sysfs_root: str | None = None,
                 dev_root: str | None = None, lock_dir: str | None = None):
        super().__init__(host, execute, sysfs_root=sysfs_root, dev_root=dev_root)
        self.lock_dir = lock_dir or self.lock_dir
        self._connector: FibreChannelConnector | None = None

    def validate(self, connection_info: dict) -> list:
        super().validate(connection_info)
        return fc_luns(connection_info["data"])

    @property
    def connector(self) -> FibreChannelConnector:
        """One per driver: os-brick's connector is made once, on first use."""
        if self._connector is None:
            self._connector = FibreChannelConnector(
                self.execute, use_multipath=CONF.libvirt.fc_use_multipath,
                scan_tries=CONF.libvirt.num_fc_scan_tries, lock_dir=self.lock_dir,
                sysfs_root=self.sysfs_root, dev_root=self.dev_root,
                brick_factory=self.connector_factory)
        return self._connector

    def host_wwpns(self) -> list[str]:
        return self.connector.host_wwpns()

    # -- recognising attached disks ------------------------------------------------
    @classmethod
    def handles_disk(cls, disk: config.LibvirtConfigGuestDisk) -> bool:
        return (disk.source_type == "block" and bool(disk.source_path)
                and bool(disk_luns(Devices(cls.dev_root, cls.sysfs_root), disk.source_path)))

    @classmethod
    def connection_info_from_disk(cls, disk: config.LibvirtConfigGuestDisk) -> dict:
        data = fc_connector.volume_data_from_device(Devices(cls.dev_root, cls.sysfs_root),
                                                    disk.source_path)
        return {"driver_volume_type": cls.driver_volume_type, "data": data,
                "serial": disk.serial}
