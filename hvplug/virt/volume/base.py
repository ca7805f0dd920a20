"""The contract every volume driver fulfils, and what they share.

A driver turns a Cinder-style ``connection_info`` into a guest disk::

    {"driver_volume_type": "iscsi",
     "data": {"target_portal": "192.0.2.10:3260",
              "target_iqn": "iqn.2010-10.org.openstack:volume-42",
              "target_lun": 1, "volume_id": "42", "access_mode": "rw"},
     "serial": "42"}

``connect_volume`` prepares the host (secrets, sessions) and may record
what it chose in ``connection_info["data"]`` for ``get_config``;
``disconnect_volume`` undoes it.
"""

from hvplug import connection_schema, exception
from hvplug.conf import CONF
from hvplug.connection_schema import require  # noqa: F401 - drivers import it from here
from hvplug.utils import executor
from hvplug.virt import config


class LibvirtBaseVolumeDriver:
    """Base class of volume drivers; subclasses set ``driver_volume_type``."""

    driver_volume_type = ""
    # The keys of ``connection_info["data"]`` this driver reads, with their rules.
    data_shape = connection_schema.COMMON

    def __init__(self, host, execute=None):
        self.host = host
        self.execute = execute or executor.execute

    # -- the contract -----------------------------------------------------
    def validate(self, connection_info: dict) -> object:
        """Check ``connection_info`` against ``data_shape`` (and, in a
        subclass, what goes beyond one key), changing nothing
        (InvalidConnectionInfo names the key).  Every flow calls it before
        anything is touched; bulk calls check every document first."""
        connection_schema.check(connection_info, self.data_shape)
        return None

    def preflight(self, connection_info: dict) -> object:
        """Checks of the storage side that need neither the domain nor any
        change on this host (a portal probe); the attach runs them while it
        waits for the domain's lock and reads the domain, and passes what
        they return (if not None) to ``connect_volume(..., preflight=...)``.
        None by default: nothing to check."""
        return None

    def connect_volume(self, connection_info: dict, domain: str) -> None:
        """Make the volume usable on this host for ``domain``."""

    def disconnect_volume(self, connection_info: dict, domain: str) -> None:
        """Undo ``connect_volume`` once ``domain`` no longer uses the volume."""

    def lock_names(self, connection_info: dict) -> list[str]:
        """Host-wide locks (``hvplug.utils.locks``) that connect_volume +
        attach, and disconnect_volume, run under; none by default."""
        return []

    def get_config(self, connection_info: dict,
                   disk_info: dict) -> config.LibvirtConfigGuestDisk:
        """The guest disk; ``disk_info`` holds ``dev`` and ``bus``."""
        data = connection_info["data"]
        conf = config.LibvirtConfigGuestDisk()
        conf.driver_name = "qemu"
        conf.driver_format = "raw"
        conf.driver_cache = CONF.libvirt.disk_cachemode
        conf.driver_discard = "unmap" if data.get("discard") else None
        conf.target_dev = disk_info["dev"]
        conf.target_bus = disk_info["bus"]
        conf.serial = connection_info.get("serial") or data.get("volume_id")
        conf.readonly = data.get("access_mode") == "ro"
        conf.shareable = bool(data.get("multiattach"))
        conf.set_qos_specs(data.get("qos_specs"))
        return conf

    def secret_config(self, connection_info: dict) -> config.LibvirtConfigSecret | None:
        """The libvirt secret this volume needs, if any (without its value)."""
        return None

    def recreate_secret(self, connection_info: dict, source_name: str,
                        uuid: str | None = None) -> str | None:
        """Define again the libvirt secret an attached disk of this volume
        needs; None when the driver keeps no libvirt secret."""
        return None

    def extend_volume(self, connection_info: dict, domain: str, dev: str,
                      new_size: int) -> int:
        """Tell QEMU disk ``dev`` of ``domain`` now has ``new_size`` bytes."""
        self.host.block_resize(domain, dev, new_size)
        return self.host.block_capacity(domain, dev)

    # -- recognising attached disks ----------------------------------------
    def is_same_volume(self, disk: config.LibvirtConfigGuestDisk,
                       connection_info: dict) -> bool:
        """Whether ``disk`` (from a domain's XML) is this volume."""
        raise NotImplementedError

    def disk_needles(self, connection_info: dict) -> list[str] | None:
        """Strings one of which the XML of a disk of this volume contains,
        so other disks need not be parsed; None: parse every disk."""
        return None

    @classmethod
    def handles_disk(cls, disk: config.LibvirtConfigGuestDisk) -> bool:
        """Whether this driver would have written ``disk``."""
        return False

    @classmethod
    def connection_info_from_disk(cls, disk: config.LibvirtConfigGuestDisk) -> dict:
        """Rebuild enough ``connection_info`` from ``disk`` to disconnect it."""
        raise NotImplementedError

    def attach_error(self, message: str, connection_info: dict) -> exception.HvplugError | None:
        """A precise error for libvirt's attach failure ``message``, if known."""
        return None


class LibvirtBaseBlockVolumeDriver(LibvirtBaseVolumeDriver):
    """Host-attached volumes: the guest gets ``<disk type='block'>`` on a
    host device that ``device_path`` names (iSCSI through iscsiadm, FC)."""

    def device_path(self, connection_info: dict) -> str:
        raise NotImplementedError

    def get_config(self, connection_info: dict,
                   disk_info: dict) -> config.LibvirtConfigGuestDisk:
        conf = super().get_config(connection_info, disk_info)
        conf.source_type = "block"
        conf.source_device = "disk"
        conf.source_path = self.device_path(connection_info)
        # QEMU refuses aio=native unless the host page cache is bypassed.
        if conf.driver_cache in ("none", "directsync"):
            conf.driver_io = "native"
        return conf

