"""The connector contract, its result, and what identifies this host.

os-brick's shape, written for hvplug::

    connector = ISCSIConnector(execute, iface="default")
    device = connector.connect_volume(connection_info["data"])
    device.path                 # '/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-...-lun-1'
    connector.extend_volume(connection_info["data"])   # the new size in bytes
    connector.disconnect_volume(connection_info["data"], device)

``props`` is Cinder's ``connection_info["data"]``, already checked against
its shape (``hvplug.connection_schema``); a connector never changes it.
Which other guests still use a LUN is the hypervisor's knowledge, not the
connector's: the caller passes the LUNs in use (``in_use``) to
``disconnect_volume``, which then keeps what they need.
"""

from collections.abc import Collection, Hashable
from pathlib import Path
from typing import Any, NamedTuple

from hvplug import connection_schema, exception

# What identifies one LUN path to a connector (an iSCSI (host, port, iqn,
# lun) or an FC (wwpn, lun)); compared, never looked into, by callers.
LunKey = Hashable


class ISCSIPath(NamedTuple):
    """One logged-in iSCSI path of a volume: the portal's session and its disk."""

    portal: str
    iqn: str
    lun: int
    sid: int
    transport: str
    device: str


class DeviceInfo(NamedTuple):
    """A volume's block device on this host, as a connector attached it.

    ``path`` is what a guest's ``<source dev=...>`` names: a stable
    ``/dev/disk/by-path`` link, or the multipath map over every path.
    """

    path: str
    type: str = "block"
    multipath: bool = False
    scsi_wwn: str | None = None      # FC: the LUN's SCSI identifier
    iface: str | None = None         # iSCSI: the open-iscsi iface logged in through
    paths: tuple[ISCSIPath, ...] = ()  # iSCSI: one per logged-in portal

    def to_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "paths": tuple(path._asdict() for path in self.paths)}


class InitiatorConnector:
    """Base of the connectors; each method's contract, os-brick's names."""

    protocol = ""

    def connect_volume(self, props: dict) -> DeviceInfo:
        """Attach the volume to this host; its device."""
        raise NotImplementedError

    def disconnect_volume(self, props: dict, device_info: DeviceInfo | None,
                          in_use: Collection[LunKey] = ()) -> None:
        """Remove the volume's devices (and, where nothing in ``in_use``
        needs them, its sessions).  ``device_info``: what connect_volume
        returned, or None when another process connected it."""
        raise NotImplementedError

    def extend_volume(self, props: dict) -> int:
        """Have the host re-read the volume's size; the new size in bytes."""
        raise NotImplementedError

    def device_path(self, props: dict) -> str:
        """The device an already attached volume has (no attach)."""
        raise NotImplementedError

    def volume_luns(self, props: dict) -> list[LunKey]:
        """The LUN paths of the volume ``props`` describes."""
        raise NotImplementedError

    def luns_of(self, path: str) -> list[LunKey]:
        """The LUN paths behind a block device (a guest disk's source)."""
        raise NotImplementedError


def host_wwpns(sysfs_root: str = "/sys") -> list[str]:
    """This host's FC HBA port WWPNs (``/sys/class/fc_host/host*/port_name``),
    lower case without ``0x``."""
    return _fc_host_names(sysfs_root, "port_name")


def host_wwnns(sysfs_root: str = "/sys") -> list[str]:
    """This host's FC HBA node WWNNs (``/sys/class/fc_host/host*/node_name``)."""
    return _fc_host_names(sysfs_root, "node_name")


def _fc_host_names(sysfs_root: str, attribute: str) -> list[str]:
    hosts = Path(sysfs_root) / "class" / "fc_host"
    names = sorted(hosts.glob(f"host*/{attribute}")) if hosts.is_dir() else []
    return [name.read_text().strip().lower().removeprefix("0x") for name in names]


def connector_properties(sysfs_root: str = "/sys", initiator_file: str | None = None) -> dict:
    """What identifies this host to a storage array (os-brick's
    ``get_connector_properties``): ``host``, and where present ``initiator``
    (the iSCSI IQN: ``[libvirt] iscsi_initiator_name``, else
    /etc/iscsi/initiatorname.iscsi), ``wwpns`` and ``wwnns`` (FC HBAs).

    A host without an IQN or without HBAs leaves the key out, as os-brick does.
    """
    import socket  # here only: the CLI's start-up path imports this module

    props: dict[str, Any] = {"host": socket.gethostname()}
    try:
        props["initiator"] = connection_schema.initiator_name(initiator_file=initiator_file)
    except exception.InitiatorNameNotFound:
        pass
    wwpns = host_wwpns(sysfs_root)
    if wwpns:
        props["wwpns"] = wwpns
        props["wwnns"] = host_wwnns(sysfs_root)
    return props
