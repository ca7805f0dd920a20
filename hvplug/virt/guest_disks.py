"""A domain's disks, read from its XML, and free target device names."""

import itertools
import string

from lxml import etree

from hvplug import exception
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
    if not dev.startswith(prefix) or not suffix.isalpha() or not suffix.islower():
        raise exception.InvalidDeviceName(
            dev=dev, bus=bus, reason=f"names on this bus look like {prefix}a, {prefix}b, {prefix}c")
    if dev in used:
        raise exception.DeviceNameInUse(dev=dev, domain=domain)
    return dev


class DomainView:
    """What an attach or detach needs to know about a domain, read once."""

    def __init__(self, host, domain: str):
        self.name = domain
        self.active, self.persistent = host.domain_state(domain)
        self.live_xml = host.domain_xml(domain) if self.active else None
        self.config_xml = host.domain_xml(domain, inactive=True) if self.persistent else None

    @property
    def current_xml(self) -> str:
        """The live XML of a running domain, else its configuration."""
        return self.live_xml or self.config_xml

    def xmls(self) -> list[str]:
        return [xml for xml in (self.live_xml, self.config_xml) if xml]

    def used_devs(self) -> set[str]:
        return set().union(*(target_devs(xml) for xml in self.xmls()))

    def find(self, match) -> tuple[str | None, object | None]:
        """``(disk_xml, disk)`` of the first disk where ``match(disk)``."""
        for xml in self.xmls():
            for disk in disks(xml):
                if match(disk):
                    return disk_xml(xml, disk.target_dev), disk
        return None, None
