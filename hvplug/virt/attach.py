"""Attach and detach flows: registry → connect → config → device name → libvirt.

Any failure on the way, an interrupt included, undoes what was done, so a
failed attach leaves no secret and no half-attached disk behind.

Each flow holds the domain's host-wide lock while it reads the domain,
picks a device name and changes it, and the volume's locks (its secret
usage) from defining the secret until the disk is in the domain, or from
counting the secret's users until it is deleted; see
:mod:`hvplug.utils.locks` for the order.

>>> host = Host()
>>> registry = VolumeDriverRegistry(host)
>>> result = attach_volume(host, registry, "guest1", connection_info, bus="scsi")
>>> result.dev
'sda'
"""

import contextlib
import logging
import threading
from typing import NamedTuple

from lxml import etree

from hvplug import connection_schema, exception
from hvplug.conf import CONF
from hvplug.utils import interrupts, locks
from hvplug.utils.masking import mask_dict
from hvplug.virt import config, encryption, guest_disks
from hvplug.virt.guest_disks import DomainView, FoundDisk
from hvplug.virt.host import Host
from hvplug.virt.volume.base import LibvirtBaseVolumeDriver, VolumeConnection
from hvplug.virt.volume.registry import VolumeDriverRegistry

LOG = logging.getLogger(__name__)


def new_uuid() -> str:
    """A fresh random UUID for a secret (``uuid`` is imported here: it imports
    ``platform``, start-up time that most commands do not need)."""
    import uuid

    return str(uuid.uuid4())


class AttachResult(NamedTuple):
    domain: str
    dev: str
    bus: str
    driver: str
    secret_uuid: str | None
    portal: str | None
    live: bool = True
    persistent: bool = False
    promoted: bool = False  # already attached live; now added to the persistent config

    def to_dict(self) -> dict:
        return self._asdict()


class DetachResult(NamedTuple):
    domain: str
    dev: str
    driver: str
    live: bool
    persistent: bool
    layer: str = "the source"  # where the volume was in the disk's chain

    def to_dict(self) -> dict:
        return self._asdict()


def check_connection_info(connection_info) -> dict:
    """The outer shape every driver relies on; drivers check ``data``."""
    return connection_schema.check_outer(connection_info)


def checked_driver(registry: VolumeDriverRegistry, connection_info):
    """The driver of ``connection_info``, the whole document checked against
    its shape first: nothing is touched for a document that is not right."""
    check_connection_info(connection_info)
    driver = registry.driver_for(connection_info)
    driver.validate(connection_info)
    ignored = connection_schema.unknown_keys(connection_info, driver.data_shape)
    if ignored:
        LOG.warning("connection_info of volume %s: %s ignored (not a key the %s driver "
                    "uses)", volume_name(connection_info), ", ".join(ignored),
                    connection_info["driver_volume_type"])
    return driver


def class_path(driver) -> str:
    return f"{type(driver).__module__}.{type(driver).__qualname__}"


def volume_name(connection_info: dict) -> str:
    data = connection_info["data"]
    return str(connection_info.get("serial") or data.get("volume_id")
               or data.get("target_iqn") or "(unnamed)")


def _flags_for_attach(view: DomainView, persistent: bool,
                      config_only: bool = False) -> tuple[bool, bool]:
    """``(live, persistent)``: live if the domain runs (unless
    ``config_only``), persistent if asked."""
    if view.managed_save:
        raise exception.ManagedSaveConflict(domain=view.name, action="attaching a volume")
    option = "--config-only" if config_only else "--persistent"
    if (persistent or config_only) and not view.persistent:
        raise exception.InvalidInput(
            reason=f"domain '{view.name}' is transient, so {option} cannot apply; "
            f"leave {option} out")
    if config_only:
        return False, True
    if not view.active and not persistent:
        raise exception.DomainNotRunning(domain=view.name)
    return view.active, persistent


@contextlib.contextmanager
def locked_view(host: Host, domain: str, operation: str):
    """The domain's lock held, and its DomainView read under it."""
    uuid = host.domain_uuid(domain)
    with locks.domain_lock(uuid, operation):
        view = DomainView(host, domain)
        if view.uuid != uuid:  # re-created under the same name while we waited
            raise exception.LibvirtError(
                action=f"lock domain '{domain}'",
                reason="it was undefined and defined again meanwhile; retry")
        yield view


def attach_volume(host: Host, registry: VolumeDriverRegistry, domain: str,
                  connection_info: dict, bus: str | None = None,
                  dev: str | None = None, persistent: bool = False,
                  config_only: bool = False, device: str | None = None,
                  passphrase: bytes | None = None) -> AttachResult:
    """Attach the volume of ``connection_info`` to ``domain``.

    A volume attached live only is, with ``persistent`` (or ``config_only``),
    added to the persistent configuration as well (``promoted``).
    ``config_only``: into the persistent configuration of a persistent
    domain only, running or not (virsh's ``--config``); the running domain
    gets it at its next start.  ``device``: ``disk`` or ``lun`` (SCSI
    passthrough, bus scsi only); default ``[libvirt] disk_device``.
    ``passphrase``: the LUKS passphrase of an encrypted volume (else
    ``[libvirt] volume_key_dir`` has it; see :mod:`hvplug.virt.encryption`).
    """
    interrupts.begin()
    driver = checked_driver(registry, connection_info)
    bus = bus or CONF.libvirt.disk_bus
    guest_disks.check_bus(bus)
    device = guest_disks.check_device(device or CONF.libvirt.disk_device, bus)
    key = encryption.passphrase_for(connection_info, passphrase, device)
    operation = f"attach volume {volume_name(connection_info)} to domain '{domain}'"
    preflight = Preflight(driver, connection_info)  # overlaps the lock and the reads
    with locked_view(host, domain, operation) as view:
        live, persistent = _flags_for_attach(view, persistent, config_only)
        found = view.find(lambda layer: driver.is_same_volume(layer, connection_info),
                          driver.disk_needles(connection_info))
        if found is not None:
            return _attached_already(host, driver, view, found, connection_info, persistent)
        used = view.used_devs()
        dev = (guest_disks.check_dev_name(dev, bus, used, domain) if dev
               else guest_disks.free_dev_name(bus, used, domain))
        with locks.all_of(driver.lock_names(connection_info)
                          + encryption.lock_names(connection_info), operation):
            connection = _plug(host, driver, connection_info, domain,
                               {"dev": dev, "bus": bus, "type": device}, live, persistent,
                               preflight, key)
    return AttachResult(domain=domain, dev=dev, bus=bus, driver=class_path(driver),
                        secret_uuid=connection.secret_uuid, portal=connection.portal,
                        live=live, persistent=persistent)


class Preflight:
    """``driver.preflight(connection_info)`` run in a thread from now on.

    The driver's checks of the storage side (the net driver's portal and
    login probe) need neither the domain nor a change on the host, so they
    run while the attach waits for the domain's lock and reads the domain;
    ``result()`` hands their outcome to ``connect_volume``, or raises their
    error there, before anything has been changed.  A driver without a
    preflight costs no thread.
    """

    def __init__(self, driver, connection_info: dict):
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = None
        if type(driver).preflight is not LibvirtBaseVolumeDriver.preflight:
            self._thread = threading.Thread(
                target=self._run, args=(driver, connection_info), daemon=True,
                name="hvplug-preflight")
            self._thread.start()

    def _run(self, driver, connection_info) -> None:
        try:
            self._value = driver.preflight(connection_info)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc

    def result(self):
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _plug(host, driver, connection_info, domain, disk_info: dict, live, persistent,
          preflight: Preflight | None = None,
          key: encryption.Passphrase | None = None) -> VolumeConnection:
    """connect_volume (and an encrypted volume's passphrase secret) + attach,
    all undone on any failure or interrupt.

    ``disk_info``: ``dev``, ``bus`` and ``type`` (``disk``/``lun``), as Nova's.
    """
    dev = disk_info["dev"]
    LOG.debug("attaching %s to %s as %s", mask_dict(connection_info), domain, dev)
    connection = None
    passphrase_secret = None
    try:
        checked = preflight.result() if preflight is not None else None
        connection = driver.connect_volume(connection_info, domain, preflight=checked)
        passphrase_secret = encryption.ensure_passphrase_secret(host, connection_info, key)
        LOG.debug("volume connected for %s; attaching device %s", domain, dev)
        disk = driver.get_config(connection, disk_info)
        encryption.configure_disk(disk, passphrase_secret)
        host.attach_device(domain, disk, live=live, persistent=persistent)
        LOG.debug("device %s attached to %s", dev, domain)
        interrupts.commit()  # done: a signal from now on must not undo it
        return connection
    except BaseException as exc:  # an interrupt too: undo, then re-raise
        if connection is None:  # connect failed: undo by what the volume is, not by its keys
            connection = VolumeConnection(connection_info)
        with interrupts.deferred():
            left = _roll_back(host, driver, connection, domain, dev, passphrase_secret)
        if isinstance(exc, Exception):
            error = _attach_error(host, driver, connection, domain, exc,
                                  undone=not left)
            if left:
                raise exception.RollbackIncomplete(
                    error=getattr(error, "message", f"{type(error).__name__}: {error}"),
                    left="; ".join(left), domain=domain, dev=dev) from error
            raise error from None
        exc.rollback_left = left  # type: ignore[attr-defined]  # an interrupt: main() says what is left
        raise


def _attached_already(host, driver, view: DomainView, found: FoundDisk,
                      connection_info: dict, persistent: bool) -> AttachResult:
    """Promote a live-only attach to the persistent config, else refuse."""
    name, dev = volume_name(connection_info), found.target_dev
    if not found.at_top:
        raise exception.VolumeIsBackingLayer(volume=name, domain=view.name, dev=dev,
                                             layer=found.describe_layer())
    places = view.places(dev)
    if not (persistent and places["live"] and not places["persistent"]):
        where = " and ".join(p for p in ("live", "persistent") if places[p]) or "saved"
        raise exception.VolumeAlreadyAttached(volume=name, domain=view.name,
                                              dev=f"{dev} ({where})")
    operation = f"add volume {name} to the persistent config of '{view.name}'"
    with locks.all_of(driver.lock_names(connection_info), operation):
        driver.connect_volume(connection_info, view.name)  # the secret, proven
        host.attach_device(view.name, config.LibvirtConfigDeviceXML.for_config(found.xml),
                           live=False, persistent=True)
        interrupts.commit()
    LOG.info("promoted %s of %s to the persistent configuration", dev, view.name)
    return AttachResult(domain=view.name, dev=dev, bus=found.disk.target_bus,
                        driver=class_path(driver), secret_uuid=found.layer.auth_secret_uuid,
                        portal=None, live=True, persistent=True, promoted=True)


def _attach_error(host, driver, connection: VolumeConnection, domain, exc,
                  undone: bool = True) -> Exception:
    if isinstance(exc, exception.HvplugError):
        return exc
    if not isinstance(exc, host.libvirt.libvirtError):
        return exc
    message = exc.get_error_message()
    precise = (encryption.attach_error(message, connection.connection_info, domain, undone)
               or driver.attach_error(message, connection))
    if precise is not None:
        return precise
    if host.is_code(exc, "VIR_ERR_OPERATION_INVALID") and not host.domain_state(domain)[0]:
        return exception.DomainNotRunning(domain=domain)
    return exception.AttachFailed(volume=volume_name(connection.connection_info), domain=domain,
                                  reason=message.rstrip("."),
                                  undone=" Nothing was left behind." if undone else "")


def _roll_back(host, driver, connection: VolumeConnection, domain, dev,
               passphrase_secret: str | None = None) -> list[str]:
    """Undo a failed attach: a disk libvirt half-added, then the driver's work
    and the passphrase secret ``passphrase_secret`` (an encrypted volume's).

    Returns what could not be undone, one phrase each (empty: nothing is
    left behind), so the error can say so instead of claiming a clean undo.
    """
    left = []
    connection_info = connection.connection_info
    try:
        view = DomainView(host, domain)
        leftover = view.find(lambda disk: disk.target_dev == dev
                             and driver.is_same_volume(disk, connection_info),
                             driver.disk_needles(connection_info))
        if leftover is not None:
            LOG.warning("removing half-attached %s from %s", dev, domain)
            places = view.places(dev)
            host.detach_device(domain, config.LibvirtConfigDeviceXML(leftover.xml), dev,
                               live=places["live"], persistent=places["persistent"])
    except Exception as exc:
        LOG.exception("could not check %s for a half-attached %s", domain, dev)
        left.append(f"perhaps disk {dev} of domain '{domain}' (checking for it failed: "
                    f"{_short(exc)})")
    try:
        driver.disconnect_volume(connection, domain)
    except Exception as exc:
        LOG.exception("rolling back the connection of %s to %s failed", dev, domain)
        left.append(f"the volume's connection on this host (its secret or sessions: "
                    f"{_short(exc)})")
    try:
        encryption.release_passphrase_secret(host, passphrase_secret)
    except Exception as exc:
        LOG.exception("rolling back the passphrase secret of %s on %s failed", dev, domain)
        left.append(f"the volume's passphrase secret {passphrase_secret} ({_short(exc)})")
    return left


def _short(exc: BaseException) -> str:
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"


def detach_volume(host: Host, registry: VolumeDriverRegistry, domain: str,
                  connection_info: dict | None = None, dev: str | None = None,
                  config_only: bool = False) -> DetachResult:
    """Detach a volume, found by ``connection_info`` or by target ``dev``.

    It leaves wherever it is attached: the live domain, its persistent
    configuration, or both, also when it became a backing layer of the
    disk (the overlay above it leaves with the disk).  A volume that is not
    attached changes nothing.  ``config_only``: from the persistent
    configuration only (virsh's ``--config``); a running domain keeps using
    it, and so keeps its secret, until it stops.
    """
    if connection_info is None and not dev:
        raise exception.InvalidInput(reason="give a connection_info or a target device name")
    driver = None
    if connection_info is not None:
        driver = checked_driver(registry, connection_info)
    what = f"volume {volume_name(connection_info)}" if connection_info else f"device {dev}"
    interrupts.begin()
    return _detach(host, registry, domain, driver, connection_info, dev,
                   f"detach {what} from domain '{domain}'", config_only)


def _detach(host, registry, domain, driver, connection_info, dev, operation,
            config_only: bool = False) -> DetachResult:
    with contextlib.ExitStack() as changing:
        with locked_view(host, domain, operation) as view:
            if config_only and not view.persistent:
                raise exception.InvalidInput(
                    reason=f"domain '{domain}' is transient, so --config-only cannot apply; "
                    "leave --config-only out")
            found = _find_for_detach(view, driver, connection_info, dev, config_only)
            if view.managed_save:
                raise exception.ManagedSaveConflict(domain=domain, action="detaching a volume")
            if driver is None:
                driver, connection_info, found = _driver_of(registry, found, domain)
            places = ({"live": False, "persistent": True} if config_only
                      else view.places(found.target_dev))
            # From the first change on, an interrupt waits until the detach is
            # complete, secret included; before it (lock waits, reads) it stops us.
            changing.enter_context(interrupts.deferred())
            host.detach_device(domain, config.LibvirtConfigDeviceXML(found.xml),
                               found.target_dev, live=places["live"],
                               persistent=places["persistent"])
            LOG.debug("device %s detached from %s", found.target_dev, domain)
        # The secret (or device) the disk really referenced, not a guess.
        connection = driver.connection_of(connection_info, found.layer)
        with locks.all_of(driver.lock_names(connection_info), operation):
            driver.disconnect_volume(connection, domain)
        encryption.release_disk_secret(host, found.layer, operation)
        interrupts.commit()
    return DetachResult(domain=domain, dev=found.target_dev, driver=class_path(driver),
                        live=places["live"], persistent=places["persistent"],
                        layer=found.describe_layer())


def _find_for_detach(view, driver, connection_info, dev,
                     config_only: bool = False) -> FoundDisk:
    """The disk to detach: live, saved, then persistent (``config_only``:
    in the persistent configuration only)."""
    def find(match, needles=None):
        if config_only:
            return guest_disks.find_disk(view.config_xml, match, needles) \
                if view.config_xml else None
        return view.find(match, needles)

    if driver is not None:
        found = find(lambda layer: driver.is_same_volume(layer, connection_info)
                     and (not dev or layer.target_dev in (None, dev)),
                     driver.disk_needles(connection_info))
        if found is not None and dev and found.target_dev != dev:
            found = None
    else:
        found = find(lambda layer: layer.target_dev == dev)
    if found is None:
        what = (f"Volume {volume_name(connection_info)}" if connection_info
                else f"Device {dev}")
        if config_only:
            what += " (looked for in the persistent configuration only: --config-only)"
        raise exception.VolumeNotAttached(what=what, domain=view.name)
    return found


def _driver_of(registry, found: FoundDisk, domain: str):
    """The driver, a connection_info and the found disk at the first layer a
    driver handles."""
    for kind, depth, layer in guest_disks.layers(etree.fromstring(found.xml.encode())):
        handled = registry.driver_for_disk(layer)
        if handled is not None:
            driver, connection_info = handled
            return driver, connection_info, found._replace(layer=layer, kind=kind, depth=depth)
    raise exception.InvalidInput(
        reason=f"{found.target_dev} on '{domain}' is not a volume any configured "
        "volume driver handles; use virsh detach-disk")


def render_volume(registry: VolumeDriverRegistry, connection_info: dict,
                  bus: str | None = None, dev: str | None = None,
                  device: str | None = None):
    """``(driver, disk_xml, secret_xml or None)`` without touching any host.

    A secret gets a fresh UUID that the disk references, so the pair can be
    fed to ``virsh secret-define`` and ``virsh attach-device`` as is.
    :func:`render` also gives an encrypted volume's passphrase secret.
    """
    rendered = render(registry, connection_info, bus=bus, dev=dev, device=device)
    return rendered.driver, rendered.disk_xml, rendered.secret_xml


class Rendered(NamedTuple):
    """A volume's disk XML and the XML of each secret it references (None
    where there is none), each secret with a fresh UUID and no value."""

    driver: LibvirtBaseVolumeDriver
    disk_xml: str
    secret_xml: str | None
    encryption_secret_xml: str | None = None


def render(registry: VolumeDriverRegistry, connection_info: dict,
           bus: str | None = None, dev: str | None = None,
           device: str | None = None) -> Rendered:
    """What :func:`attach_volume` would give libvirt, without touching any host."""
    driver = checked_driver(registry, connection_info)
    bus = bus or CONF.libvirt.disk_bus
    device = guest_disks.check_device(device or CONF.libvirt.disk_device, bus)
    encryption.check_device(connection_info, device)
    dev = (guest_disks.check_dev_name(dev, bus, set(), "(rendered)") if dev
           else guest_disks.free_dev_name(bus, set(), "(rendered)"))
    secret = driver.secret_config(connection_info)
    connection = driver.connection_of(connection_info)
    if secret is not None:
        secret.uuid = new_uuid()
        connection = connection._replace(secret_uuid=secret.uuid)
    passphrase_secret = encryption.secret_config(connection_info)
    if passphrase_secret is not None:
        passphrase_secret.uuid = new_uuid()
    disk = driver.get_config(connection, {"dev": dev, "bus": bus, "type": device})
    encryption.configure_disk(disk, passphrase_secret.uuid if passphrase_secret else None)
    return Rendered(driver, disk.to_xml(), secret.to_xml() if secret is not None else None,
                    passphrase_secret.to_xml() if passphrase_secret is not None else None)
