"""Attach and detach flows: registry → connect → config → device name → libvirt.

Any failure on the way undoes what was done, so a failed attach leaves no
secret and no half-attached disk behind.

>>> host = Host()
>>> registry = VolumeDriverRegistry(host)
>>> result = attach_volume(host, registry, "guest1", connection_info, bus="scsi")
>>> result.dev
'sda'
"""

import logging
import uuid
from dataclasses import asdict, dataclass

from hvplug import exception
from hvplug.conf import CONF
from hvplug.utils.masking import mask_dict
from hvplug.virt import guest_disks
from hvplug.virt.guest_disks import DomainView
from hvplug.virt.host import Host
from hvplug.virt.volume.registry import VolumeDriverRegistry

LOG = logging.getLogger(__name__)


@dataclass
class AttachResult:
    domain: str
    dev: str
    bus: str
    driver: str
    secret_uuid: str | None
    portal: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DetachResult:
    domain: str
    dev: str
    driver: str
    live: bool
    persistent: bool

    def to_dict(self) -> dict:
        return asdict(self)


def check_connection_info(connection_info) -> dict:
    """The outer shape every driver relies on; drivers check ``data``."""
    if not isinstance(connection_info, dict):
        raise exception.InvalidConnectionInfo(reason="it must be a JSON object")
    volume_type = connection_info.get("driver_volume_type")
    if not isinstance(volume_type, str) or not volume_type:
        raise exception.InvalidConnectionInfo(reason="driver_volume_type is missing")
    if not isinstance(connection_info.get("data"), dict):
        raise exception.InvalidConnectionInfo(reason="data is missing or not an object")
    return connection_info


def class_path(driver) -> str:
    return f"{type(driver).__module__}.{type(driver).__qualname__}"


def _flags_for_attach(view: DomainView, persistent: bool) -> tuple[bool, bool]:
    if persistent and not view.persistent:
        raise exception.InvalidInput(
            reason=f"domain '{view.name}' is transient, so --persistent cannot apply; "
            "leave --persistent out")
    if not view.active and not persistent:
        raise exception.DomainNotRunning(domain=view.name)
    return view.active, persistent


def attach_volume(host: Host, registry: VolumeDriverRegistry, domain: str,
                  connection_info: dict, bus: str | None = None,
                  dev: str | None = None, persistent: bool = False) -> AttachResult:
    """Attach the volume of ``connection_info`` to ``domain``."""
    check_connection_info(connection_info)
    driver = registry.driver_for(connection_info)
    view = DomainView(host, domain)
    live, persistent = _flags_for_attach(view, persistent)
    _, attached = view.find(lambda disk: driver.is_same_volume(disk, connection_info))
    if attached is not None:
        raise exception.VolumeAlreadyAttached(
            volume=_volume_name(connection_info), domain=domain, dev=attached.target_dev)
    bus = bus or CONF.libvirt.disk_bus
    used = view.used_devs()
    dev = (guest_disks.check_dev_name(dev, bus, used, domain) if dev
           else guest_disks.free_dev_name(bus, used, domain))
    LOG.debug("attaching %s to %s as %s", mask_dict(connection_info), domain, dev)
    driver.connect_volume(connection_info, domain)
    try:
        xml = driver.get_config(connection_info, {"dev": dev, "bus": bus}).to_xml()
        host.attach_device(domain, xml, live=live, persistent=persistent)
    except Exception as exc:  # noqa: BLE001 - whatever failed, undo, then re-raise
        _roll_back(host, driver, connection_info, domain, dev)
        raise _attach_error(host, driver, connection_info, domain, exc) from None
    data = connection_info["data"]
    return AttachResult(domain=domain, dev=dev, bus=bus, driver=class_path(driver),
                        secret_uuid=data.get("secret_uuid"),
                        portal=(data.get("selected_target") or {}).get("portal"))


def _volume_name(connection_info: dict) -> str:
    data = connection_info["data"]
    return str(connection_info.get("serial") or data.get("volume_id")
               or data.get("target_iqn") or "(unnamed)")


def _attach_error(host, driver, connection_info, domain, exc) -> Exception:
    if isinstance(exc, exception.HvplugError):
        return exc
    if not isinstance(exc, host.libvirt.libvirtError):
        return exc
    message = exc.get_error_message()
    precise = driver.attach_error(message, connection_info)
    if precise is not None:
        return precise
    if host.is_code(exc, "VIR_ERR_OPERATION_INVALID") and not host.domain_state(domain)[0]:
        return exception.DomainNotRunning(domain=domain)
    return exception.AttachFailed(volume=_volume_name(connection_info), domain=domain,
                                  reason=message)


def _roll_back(host, driver, connection_info, domain, dev) -> None:
    """Undo a failed attach: a disk libvirt half-added, then the driver's work."""
    try:
        view = DomainView(host, domain)
        leftover, _ = view.find(lambda disk: disk.target_dev == dev
                                and driver.is_same_volume(disk, connection_info))
        if leftover:
            LOG.warning("removing half-attached %s from %s", dev, domain)
            host.detach_device(domain, leftover, dev, live=view.active,
                               persistent=view.persistent)
    except Exception:
        LOG.exception("could not check %s for a half-attached %s", domain, dev)
    try:
        driver.disconnect_volume(connection_info, domain)
    except Exception:
        LOG.exception("rolling back the connection of %s to %s failed", dev, domain)


def detach_volume(host: Host, registry: VolumeDriverRegistry, domain: str,
                  connection_info: dict | None = None, dev: str | None = None) -> DetachResult:
    """Detach a volume, found by ``connection_info`` or by target ``dev``.

    It leaves wherever it is attached: the live domain, its persistent
    configuration, or both.  A volume that is not attached changes nothing.
    """
    if connection_info is None and not dev:
        raise exception.InvalidInput(reason="give a connection_info or a target device name")
    view = DomainView(host, domain)
    driver = None
    if connection_info is not None:
        check_connection_info(connection_info)
        driver = registry.driver_for(connection_info)
        xml, disk = view.find(lambda d: driver.is_same_volume(d, connection_info)
                              and (not dev or d.target_dev == dev))
    else:
        xml, disk = view.find(lambda d: d.target_dev == dev)
    if disk is None:
        what = (f"Volume {_volume_name(connection_info)}" if connection_info
                else f"Device {dev}")
        raise exception.VolumeNotAttached(what=what, domain=domain)
    if driver is None:
        found = registry.driver_for_disk(disk)
        if found is None:
            raise exception.InvalidInput(
                reason=f"{dev} on '{domain}' is not a volume any configured "
                "volume driver handles; use virsh detach-disk")
        driver, connection_info = found
    return _detach(host, driver, view, xml, disk, connection_info)


def _detach(host, driver, view, xml, disk, connection_info) -> DetachResult:
    dev = disk.target_dev
    live = bool(view.live_xml and dev in guest_disks.target_devs(view.live_xml))
    persistent = bool(view.config_xml and dev in guest_disks.target_devs(view.config_xml))
    host.detach_device(view.name, xml, dev, live=live, persistent=persistent)
    if disk.auth_secret_uuid:
        connection_info["data"]["secret_uuid"] = disk.auth_secret_uuid
    driver.disconnect_volume(connection_info, view.name)
    return DetachResult(domain=view.name, dev=dev, driver=class_path(driver),
                        live=live, persistent=persistent)


def render_volume(registry: VolumeDriverRegistry, connection_info: dict,
                  bus: str | None = None, dev: str | None = None):
    """``(driver, disk_xml, secret_xml or None)`` without touching any host.

    A secret gets a fresh UUID that the disk references, so the pair can be
    fed to ``virsh secret-define`` and ``virsh attach-device`` as is.
    """
    check_connection_info(connection_info)
    driver = registry.driver_for(connection_info)
    bus = bus or CONF.libvirt.disk_bus
    dev = (guest_disks.check_dev_name(dev, bus, set(), "(rendered)") if dev
           else guest_disks.free_dev_name(bus, set(), "(rendered)"))
    secret = driver.secret_config(connection_info)
    if secret is not None:
        secret.uuid = str(uuid.uuid4())
        connection_info["data"]["secret_uuid"] = secret.uuid
    disk = driver.get_config(connection_info, {"dev": dev, "bus": bus})
    return driver, disk.to_xml(), secret.to_xml() if secret is not None else None
