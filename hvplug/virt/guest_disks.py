"""A domain's disks, read from its XML, and free target device names.

A volume can sit below a disk's top: after ``virsh snapshot-create-as
--disk-only`` it is the ``<backingStore>`` of an overlay file, and during
``virsh blockcopy`` a disk carries a ``<mirror>``.  :func:`layers` yields
every such layer, so a volume is found wherever it is in the chain.
"""

import itertools
import string
from typing import NamedTuple

from lxml import etree

from hvplug import exception
from hvplug.conf.choices import DISK_DEVICES
from hvplug.virt import config

# virtio-blk disks are vdX; SCSI and SATA share the sdX namespace.
BUS_PREFIXES = {"virtio": "vd", "scsi": "sd", "sata": "sd"}


def disks(domain_xml: str) -> list[config.LibvirtConfigGuestDisk]:
    """Every ``<disk>`` of ``domain_xml``, parsed."""
    root = etree.fromstring(domain_xml.encode())
    found = []
    for element in root.iterfind("./devices/disk"):
        disk = config.LibvirtConfigGuestDisk()
        disk.parse_dom(element)
        found.append(disk)
    return found


def layers(element: etree._Element):
    """``(kind, depth, layer)`` of a ``<disk>`` element, top first.

    ``kind`` is ``source`` (the disk's own source, depth 0), ``backing``
    (depth n: the n-th ``<backingStore>`` down) or ``mirror``.
    """
    top = config.LibvirtConfigGuestDisk()
    top.parse_dom(element)
    yield "source", 0, top
    current, depth = element, 0
    while (store := current.find("backingStore")) is not None and len(store):
        depth += 1
        layer = config.LibvirtConfigDiskLayer()
        layer.parse_dom(store)
        yield "backing", depth, layer
        current = store
    mirror = element.find("mirror")
    if mirror is not None and len(mirror):
        layer = config.LibvirtConfigDiskLayer()
        layer.parse_dom(mirror)
        yield "mirror", 0, layer


class FoundDisk(NamedTuple):
    """A disk of a domain and the layer of it that matched."""

    xml: str  # the whole <disk> element, as libvirt wrote it
    disk: config.LibvirtConfigGuestDisk  # the disk (its top layer)
    layer: config.LibvirtConfigGuestDisk  # the matching layer; ``disk`` at the top
    kind: str  # "source", "backing" or "mirror"
    depth: int

    @property
    def target_dev(self) -> str:
        return self.disk.target_dev

    @property
    def at_top(self) -> bool:
        return self.kind == "source"

    def describe_layer(self) -> str:
        """``backing layer 1 under /var/lib/x.qcow2``, ``the source``, ..."""
        if self.kind == "source":
            return "the source"
        top = self.disk.source_path or self.disk.source_name or "(unnamed)"
        if self.kind == "mirror":
            return f"the block-copy mirror of {top}"
        return f"backing layer {self.depth} under {top}"


def find_disk(domain_xml: str, match, needles: list[str] | None = None) -> FoundDisk | None:
    """The first disk with a layer where ``match(layer)``, top layers first.

    ``needles``: strings one of which a matching ``<disk>`` element's XML
    must contain; disks without any are not parsed (parsing every layer of
    a domain with many disks is what an attach would otherwise spend its
    time on).
    """
    if needles is not None and not any(needle in domain_xml for needle in needles):
        return None
    root = etree.fromstring(domain_xml.encode())
    for element in root.iterfind("./devices/disk"):
        text = etree.tostring(element, encoding="unicode")
        if needles is not None and not any(needle in text for needle in needles):
            continue
        found = [(kind, depth, layer) for kind, depth, layer in layers(element)
                 if match(layer)]
        if found:
            kind, depth, layer = found[0]
            disk = config.LibvirtConfigGuestDisk()
            disk.parse_dom(element)
            return FoundDisk(text, disk, layer, kind, depth)
    return None


def target_devs(domain_xml: str) -> set[str]:
    """Target device names of every disk in ``domain_xml``."""
    root = etree.fromstring(domain_xml.encode())
    return set(root.xpath("./devices/disk/target/@dev"))


def disk_xml(domain_xml: str, dev: str) -> str | None:
    """The ``<disk>`` element with target ``dev``, as libvirt wrote it."""
    root = etree.fromstring(domain_xml.encode())
    for element in root.xpath("./devices/disk[target/@dev=$dev]", dev=dev):
        return etree.tostring(element, encoding="unicode")
    return None


def _names(prefix: str):
    """vda … vdz, vdaa … vdzz, as libvirt and the kernel count."""
    letters = string.ascii_lowercase
    for length in (1, 2):
        for combo in itertools.product(letters, repeat=length):
            yield prefix + "".join(combo)


def check_bus(bus: str) -> str:
    if bus not in BUS_PREFIXES:
        raise exception.InvalidInput(
            reason=f"bus {bus!r} is not one of {', '.join(BUS_PREFIXES)}")
    return BUS_PREFIXES[bus]


def check_device(device: str, bus: str) -> str:
    """``device`` (``DISK_DEVICES``: a disk, or the LUN itself passed
    through, whose SCSI commands reach the target) fits ``bus``: a LUN
    needs a SCSI bus."""
    if device not in DISK_DEVICES:
        raise exception.InvalidInput(
            reason=f"device {device!r} is not one of {', '.join(DISK_DEVICES)}")
    if device == "lun" and bus != "scsi":
        raise exception.InvalidInput(
            reason=f"device 'lun' passes the SCSI LUN through, which needs bus scsi, not "
            f"{bus!r}: give --bus scsi (or --device disk)")
    return device


def free_dev_name(bus: str, used: set[str], domain: str) -> str:
    """The first name for ``bus`` that no disk of ``domain`` uses."""
    prefix = check_bus(bus)
    for name in _names(prefix):
        if name not in used:
            return name
    raise exception.NoFreeDeviceName(bus=bus, domain=domain)


def check_dev_name(dev: str, bus: str, used: set[str], domain: str) -> str:
    """Validate a requested target ``dev`` for ``bus``."""
    prefix = check_bus(bus)
    suffix = dev[len(prefix):]
    if (not dev.startswith(prefix) or not suffix.isascii() or not suffix.isalpha()
            or not suffix.islower() or len(suffix) > 4):
        raise exception.InvalidDeviceName(
            dev=dev, bus=bus, reason=f"names on this bus look like {prefix}a, {prefix}b, {prefix}c")
    if dev in used:
        raise exception.DeviceNameInUse(dev=dev, domain=domain)
    return dev


class DomainView:
    """What an attach or detach needs to know about a domain, read once.

    ``saved_xml`` is the XML of a managed save image (``virsh managedsave``):
    what the domain resumes with at its next start.
    """

    def __init__(self, host, domain: str):
        self.name = domain
        state, self.live_xml, self.config_xml, self.saved_xml = host.domain_view(domain)
        self.uuid, self.active, self.persistent = state.uuid, state.active, state.persistent
        self.managed_save = state.managed_save

    @property
    def current_xml(self) -> str:
        """The live XML of a running domain, its saved image's, else its configuration."""
        return self.live_xml or self.saved_xml or self.config_xml

    def xmls(self) -> list[str]:
        return [xml for xml in (self.live_xml, self.saved_xml, self.config_xml) if xml]

    def used_devs(self) -> set[str]:
        return set().union(*(target_devs(xml) for xml in self.xmls()))

    def find(self, match, needles: list[str] | None = None) -> FoundDisk | None:
        """The first disk, live then saved then persistent, with a layer where
        ``match`` (see :func:`find_disk` for ``needles``)."""
        for xml in self.xmls():
            found = find_disk(xml, match, needles)
            if found is not None:
                return found
        return None

    def places(self, dev: str) -> dict[str, bool]:
        """Where disk ``dev`` is: ``{"live": ..., "persistent": ..., "saved": ...}``."""
        return {"live": bool(self.live_xml and dev in target_devs(self.live_xml)),
                "persistent": bool(self.config_xml and dev in target_devs(self.config_xml)),
                "saved": bool(self.saved_xml and dev in target_devs(self.saved_xml))}
