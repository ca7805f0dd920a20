"""The contract every volume driver fulfils, and what they share.

A driver turns a Cinder-style ``connection_info`` into a guest disk::

    {"driver_volume_type": "iscsi",
     "data": {"target_portal": "192.0.2.10:3260",
              "target_iqn": "iqn.2010-10.org.openstack:volume-42",
              "target_lun": 1, "volume_id": "42", "access_mode": "rw"},
     "serial": "42"}

``connect_volume`` prepares the host (secrets, sessions) and returns a
:class:`VolumeConnection` saying what it chose; ``get_config`` builds the
disk from that connection and ``disconnect_volume`` undoes it.  Nothing
writes into ``connection_info``: it stays the caller's document.  A volume
connected by another process (a detach, a rollback) gets its connection from
``connection_of``, built from the disk libvirt shows.
"""

import logging
from collections.abc import Callable
from typing import NamedTuple

from hvplug import connection_schema, exception
from hvplug.conf import CONF
from hvplug.connection_schema import ISCSITarget
from hvplug.initiator.connectors.base import DeviceInfo, InitiatorConnector, LunKey
from hvplug.utils import executor
from hvplug.virt import config, guest_disks

LOG = logging.getLogger(__name__)


class VolumeConnection(NamedTuple):
    """A volume made usable on this host: what ``get_config``,
    ``disconnect_volume`` and the attach result read.

    ``target``: the iSCSI target chosen (network disks); ``secret_uuid`` /
    ``secret_usage``: the libvirt secret the disk references (by uuid, or by
    usage when a disk names it so); ``device``: the host's block device
    (host-attached volumes).
    """

    connection_info: dict
    target: ISCSITarget | None = None
    secret_uuid: str | None = None
    secret_usage: str | None = None
    device: DeviceInfo | None = None

    @property
    def data(self) -> dict:
        return self.connection_info["data"]

    @property
    def portal(self) -> str | None:
        """Where the target was reached, when a portal was chosen."""
        if self.target is not None:
            return self.target.portal
        if self.device is not None and self.device.paths:
            return self.device.paths[0].portal
        return None


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

    def connect_volume(self, connection_info: dict, domain: str | None,
                       preflight: object = None) -> VolumeConnection:
        """Make the volume usable on this host for ``domain``."""
        return self.connection_of(connection_info)

    def connection_of(self, connection_info: dict,
                      disk: config.LibvirtConfigGuestDisk | None = None) -> VolumeConnection:
        """The connection of a volume this process did not connect: as the
        disk layer ``disk`` of a domain shows it (a detach), or, without a
        disk, as ``connection_info`` alone describes it (render, rollback)."""
        if disk is None:  # what the document itself says of its secret, if anything
            data = connection_info["data"]
            return VolumeConnection(connection_info, secret_uuid=data.get("secret_uuid"),
                                    secret_usage=data.get("secret_usage"))
        return VolumeConnection(connection_info, secret_uuid=disk.auth_secret_uuid,
                                secret_usage=disk.auth_secret_usage)

    def disconnect_volume(self, connection: VolumeConnection, domain: str | None) -> None:
        """Undo ``connect_volume`` once ``domain`` no longer uses the volume."""

    def lock_names(self, connection_info: dict) -> list[str]:
        """Host-wide locks (``hvplug.utils.locks``) that connect_volume +
        attach, and disconnect_volume, run under; none by default."""
        return []

    def get_config(self, connection: VolumeConnection,
                   disk_info: dict) -> config.LibvirtConfigGuestDisk:
        """The guest disk; ``disk_info`` holds ``dev`` and ``bus``.

        As Nova's: ``multiattach`` (at the top, where Nova puts it, or in
        ``data``) makes the disk ``<shareable/>`` with the host cache off
        (``cache='none'``, whatever ``disk_cachemode`` says: two guests
        must see each other's writes); the block sizes become
        ``<blockio>``; ``qos_specs`` become ``<iotune>``.
        """
        connection_info = connection.connection_info
        data = connection_info["data"]
        conf = config.LibvirtConfigGuestDisk()
        conf.source_device = disk_info.get("type") or "disk"
        conf.driver_name = "qemu"
        conf.driver_format = "raw"
        conf.shareable = bool(connection_info.get("multiattach") or data.get("multiattach"))
        conf.driver_cache = "none" if conf.shareable else CONF.libvirt.disk_cachemode
        conf.driver_discard = "unmap" if data.get("discard") else None
        conf.target_dev = disk_info["dev"]
        conf.target_bus = disk_info["bus"]
        # A passed-through LUN answers INQUIRY itself (its own serial):
        # libvirt refuses <serial> on device='lun'.
        if conf.source_device != "lun":
            conf.serial = connection_info.get("serial") or data.get("volume_id")
        conf.readonly = data.get("access_mode") == "ro"
        for key in ("logical_block_size", "physical_block_size"):
            if data.get(key) not in (None, ""):
                setattr(conf, key, int(data[key]))
        conf.set_qos_specs(data.get("qos_specs"))
        return conf

    def secret_config(self, connection_info: dict,
                      target: ISCSITarget | None = None) -> config.LibvirtConfigSecret | None:
        """The libvirt secret this volume needs, if any (without its value)."""
        return None

    def recreate_secret(self, connection_info: dict, source_name: str,
                        uuid: str | None = None) -> str | None:
        """Define again the libvirt secret an attached disk of this volume
        needs; None when the driver keeps no libvirt secret."""
        return None

    def volume_size(self, connection_info: dict) -> int:
        """The volume's size now, in bytes, as the storage side reports it;
        a driver that cannot tell raises InvalidInput asking for the size."""
        raise exception.InvalidInput(
            reason=f"hvplug cannot read the size of {connection_info['driver_volume_type']} "
            "volumes: give the new size (--size)")

    def extend_volume(self, connection_info: dict, domain: str, dev: str,
                      new_size: int | None = None) -> int:
        """Tell QEMU disk ``dev`` of ``domain`` has grown to ``new_size``
        bytes (default: ``volume_size``); what QEMU now sees."""
        size = new_size if new_size is not None else self.volume_size(connection_info)
        self.host.block_resize(domain, dev, size)
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

    def attach_error(self, message: str,
                     connection: VolumeConnection) -> exception.HvplugError | None:
        """A precise error for libvirt's attach failure ``message``, if known."""
        return None


def domains_using(host, luns_of: Callable[[str], list[LunKey]]) -> dict[LunKey, set[str]]:
    """Every LUN a domain's block disk uses (live or persistent): LUN -> domains.

    ``luns_of(source_path)`` names the LUNs behind one disk source (a
    connector's ``luns_of``).
    """
    used: dict[LunKey, set[str]] = {}
    for name, xmls in host.domain_xmls().items():
        for xml in xmls:
            for disk in guest_disks.disks(xml):
                if disk.source_type == "block" and disk.source_path:
                    for lun in luns_of(disk.source_path):
                        used.setdefault(lun, set()).add(name)
    return used


class LibvirtBaseBlockVolumeDriver(LibvirtBaseVolumeDriver):
    """Host-attached volumes: a connector (``hvplug.initiator.connectors``)
    attaches the volume to the host, the guest gets ``<disk type='block'>``
    on the device it hands out (iSCSI through iscsiadm, FC)."""

    # The host's trees; another root (a test, a chroot) is passed to __init__.
    sysfs_root = "/sys"
    dev_root = "/dev"

    def __init__(self, host, execute=None, *, sysfs_root: str | None = None,
                 dev_root: str | None = None):
        super().__init__(host, execute)
        self.sysfs_root = sysfs_root or self.sysfs_root
        self.dev_root = dev_root or self.dev_root

    @property
    def connector(self) -> InitiatorConnector:
        """The connector with this driver's settings (made per use, so option
        changes apply)."""
        raise NotImplementedError

    # -- connect / disconnect ------------------------------------------------
    def connect_volume(self, connection_info: dict, domain: str | None,
                       preflight: object = None) -> VolumeConnection:
        device = self.connector.connect_volume(connection_info["data"])
        return VolumeConnection(connection_info, device=device)

    def connection_of(self, connection_info: dict,
                      disk: config.LibvirtConfigGuestDisk | None = None) -> VolumeConnection:
        connection = super().connection_of(connection_info, disk)
        if disk is None or not disk.source_path:
            return connection
        return connection._replace(device=DeviceInfo(path=disk.source_path))

    def disconnect_volume(self, connection: VolumeConnection, domain: str | None) -> None:
        """Remove the volume's devices (and sessions) unless a domain still uses them."""
        connector = self.connector
        luns = connector.volume_luns(connection.data)
        in_use = domains_using(self.host, connector.luns_of)
        users = sorted({name for lun in luns for name in in_use.get(lun, ())})
        if users:
            LOG.info("keeping the host's devices of volume %s: %s still use them",
                     connection.connection_info.get("serial") or luns[0], ", ".join(users))
            return
        connector.disconnect_volume(connection.data, connection.device, in_use=set(in_use))

    def extend_volume(self, connection_info: dict, domain: str, dev: str,
                      new_size: int | None = None) -> int:
        """Have the host re-read the volume's size, then hand it to QEMU."""
        size = self.connector.extend_volume(connection_info["data"])
        if new_size is not None and size < new_size:
            LOG.warning("volume %s is %d bytes after the rescan, less than the %d asked for",
                        connection_info.get("serial") or dev, size, new_size)
        self.host.block_resize(domain, dev, size)
        return size

    # -- disk ----------------------------------------------------------------
    def device_path(self, connection: VolumeConnection) -> str:
        """The device connect_volume handed out, else the volume's existing one."""
        if connection.device is not None:
            return connection.device.path
        return self.connector.device_path(connection.data)

    def get_config(self, connection: VolumeConnection,
                   disk_info: dict) -> config.LibvirtConfigGuestDisk:
        conf = super().get_config(connection, disk_info)
        conf.source_type = "block"
        conf.source_path = self.device_path(connection)
        # QEMU refuses aio=native unless the host page cache is bypassed.
        if conf.driver_cache in ("none", "directsync"):
            conf.driver_io = "native"
        return conf

    def is_same_volume(self, disk: config.LibvirtConfigGuestDisk,
                       connection_info: dict) -> bool:
        if disk.source_type != "block" or not disk.source_path:
            return False
        connector = self.connector
        wanted = set(connector.volume_luns(connection_info["data"]))
        return any(lun in wanted for lun in connector.luns_of(disk.source_path))
