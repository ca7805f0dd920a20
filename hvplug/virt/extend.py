"""Extend: a running guest learns that its volume grew.

The storage side grew the LUN (Cinder's ``extend_volume``, ``tgtadm`` with
a larger backing file...); this tells QEMU, as Nova's
``extend_volume(connection_info, instance, requested_size)`` does:

- network disks (QEMU's initiator): ``virDomainBlockResize`` to the new
  size, which QEMU's iSCSI driver checks against the LUN's capacity (it
  re-reads it); the size is ``size`` if given, else read from the target
  through ``qemu-img info`` (which needs the CHAP password: a
  ``connection_info``, not a bare ``--dev``);
- host-attached disks: the connector rescans the sessions (and resizes the
  multipath map), then QEMU gets the size the kernel now reports.

>>> result = extend_volume(host, registry, "guest1", dev="sda")
>>> result.old_size, result.new_size
(1073741824, 2147483648)
"""

import logging
from dataclasses import asdict, dataclass

from hvplug import exception
from hvplug.virt import attach, guest_disks
from hvplug.virt.host import Host
from hvplug.virt.volume.registry import VolumeDriverRegistry

LOG = logging.getLogger(__name__)


@dataclass
class ExtendResult:
    domain: str
    dev: str
    driver: str
    old_size: int
    new_size: int

    def to_dict(self) -> dict:
        return asdict(self)


def extend_volume(host: Host, registry: VolumeDriverRegistry, domain: str,
                  connection_info: dict | None = None, dev: str | None = None,
                  size: int | None = None) -> ExtendResult:
    """Tell the running ``domain`` that the volume (found by
    ``connection_info`` or by target ``dev``) now has its new size."""
    if connection_info is None and not dev:
        raise exception.InvalidInput(reason="give a connection_info or a target device name")
    if size is not None and size <= 0:
        raise exception.InvalidInput(reason=f"the new size must be positive, not {size}")
    driver = attach.checked_driver(registry, connection_info) if connection_info else None
    what = (f"volume {attach.volume_name(connection_info)}" if connection_info
            else f"device {dev}")
    with attach.locked_view(host, domain, f"extend {what} of domain '{domain}'") as view:
        if not view.active:
            raise exception.DomainNotRunning(domain=domain)
        found = _live_disk(view, driver, connection_info, dev)
        if not found.at_top:
            raise exception.InvalidInput(
                reason=f"{what} is {found.describe_layer()} of {found.target_dev} on "
                f"'{domain}', below an overlay: QEMU resizes only the top of a disk")
        if driver is None or connection_info is None:
            handled = registry.driver_for_disk(found.layer)
            if handled is None:
                raise exception.InvalidInput(
                    reason=f"{found.target_dev} on '{domain}' is not a volume any configured "
                    "volume driver handles; use virsh blockresize")
            driver, connection_info = handled
        if found.layer.encryption_format and size is None:
            raise exception.InvalidInput(
                reason=f"{found.target_dev} on '{domain}' is an encrypted (LUKS) volume: the "
                "guest sees the LUN less its LUKS header, which hvplug cannot read; give the "
                "new size the guest should see (--size)")
        dev = found.target_dev
        old_size = host.block_capacity(domain, dev)
        new_size = driver.extend_volume(connection_info, domain, dev, size)
    if new_size < old_size:
        LOG.warning("%s of %s is now %d bytes, less than the %d it had", dev, domain,
                    new_size, old_size)
    LOG.info("%s of %s: %d -> %d bytes", dev, domain, old_size, new_size)
    return ExtendResult(domain=domain, dev=dev, driver=attach.class_path(driver),
                        old_size=old_size, new_size=new_size)


def _live_disk(view, driver, connection_info, dev) -> guest_disks.FoundDisk:
    """The live disk of the volume (or of ``dev``), in any layer."""
    if driver is not None:
        found = guest_disks.find_disk(
            view.live_xml, lambda layer: driver.is_same_volume(layer, connection_info)
            and (not dev or layer.target_dev in (None, dev)),
            driver.disk_needles(connection_info))
    else:
        found = guest_disks.find_disk(view.live_xml, lambda layer: layer.target_dev == dev)
    if found is None or (dev and found.target_dev != dev):
        what = (f"Volume {attach.volume_name(connection_info)}" if connection_info
                else f"Device {dev}")
        raise exception.VolumeNotAttached(what=what, domain=view.name)
    return found
