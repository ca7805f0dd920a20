"""``[libvirt] volume_drivers``: which driver class serves which volume type.

Entries are ``driver_volume_type=dotted.path.Class`` (the nova-compute
convention).  Configured entries override the defaults type by type, and
every configured entry is imported and checked when the registry is built,
so a typo fails at start-up with the entry named, not at the first attach.
hvplug's own default drivers are imported when their type is first used
(an iSCSI attach does not import the Fibre Channel driver).
"""

from hvplug import exception
from hvplug.conf import CONF
from hvplug.conf.libvirt import DEFAULT_VOLUME_DRIVERS
from hvplug.utils.importutils import ImportClassError, import_class
from hvplug.virt.volume.base import LibvirtBaseVolumeDriver


def parse_entry(entry: str) -> tuple[str, type[LibvirtBaseVolumeDriver]]:
    """``"iscsi=pkg.mod.Class"`` → ``("iscsi", Class)``, checked."""
    volume_type, sep, path = (part.strip() for part in entry.partition("="))
    module_name, dot, class_name = path.rpartition(".")
    if not sep or not volume_type or not dot or not module_name or not class_name:
        raise exception.InvalidVolumeDriverEntry(
            entry=entry, reason="expected 'type=dotted.path.Class'")
    try:
        cls = import_class(path, LibvirtBaseVolumeDriver)
    except ImportClassError as exc:
        raise exception.InvalidVolumeDriverEntry(entry=entry, reason=exc.reason) from None
    return volume_type, cls


def load(entries: list[str]) -> dict[str, type[LibvirtBaseVolumeDriver]]:
    """Defaults, then ``entries`` on top, each validated."""
    classes: dict[str, type[LibvirtBaseVolumeDriver]] = {}
    for entry in [*DEFAULT_VOLUME_DRIVERS, *entries]:
        volume_type, cls = parse_entry(entry)
        classes[volume_type] = cls
    return classes


class VolumeDriverRegistry:
    """Driver instances for one Host, built from ``volume_drivers``."""

    def __init__(self, host, entries: list[str] | None = None):
        self.host = host
        if entries is None:
            entries = CONF.libvirt.volume_drivers
        # Checked now; the option's default (hvplug's own entries) is not
        # configuration to check, and stays lazy like every default.
        configured = dict(parse_entry(entry) for entry in entries
                          if entry.replace(" ", "") not in DEFAULT_VOLUME_DRIVERS)
        # Every type, in the defaults' order, then the new ones; a default
        # entry not overridden stays a path until its type is used.
        self._entries: dict[str, type[LibvirtBaseVolumeDriver] | str] = {
            volume_type: configured.get(volume_type, entry)
            for volume_type, entry in (e.partition("=")[::2] for e in DEFAULT_VOLUME_DRIVERS)}
        self._entries.update(configured)
        self._drivers: dict[str, LibvirtBaseVolumeDriver] = {}

    def class_for_type(self, volume_type: str) -> type[LibvirtBaseVolumeDriver]:
        if volume_type not in self._entries:
            raise exception.VolumeDriverNotFound(
                driver_type=volume_type, known=", ".join(sorted(self._entries)))
        entry = self._entries[volume_type]
        if isinstance(entry, str):
            entry = self._entries[volume_type] = parse_entry(f"{volume_type}={entry}")[1]
        return entry

    @property
    def classes(self) -> dict[str, type[LibvirtBaseVolumeDriver]]:
        """Every type's class (importing the defaults not used yet)."""
        return {volume_type: self.class_for_type(volume_type) for volume_type in self._entries}

    def driver_for_type(self, volume_type: str) -> LibvirtBaseVolumeDriver:
        if volume_type not in self._drivers:
            self._drivers[volume_type] = self.class_for_type(volume_type)(self.host)
        return self._drivers[volume_type]

    def driver_for(self, connection_info: dict) -> LibvirtBaseVolumeDriver:
        """The driver for ``connection_info["driver_volume_type"]``."""
        return self.driver_for_type(connection_info["driver_volume_type"])

    def driver_for_disk(self, disk) -> tuple[LibvirtBaseVolumeDriver, dict] | None:
        """The driver that handles attached ``disk`` and its connection_info."""
        for volume_type, cls in self.classes.items():
            if cls.handles_disk(disk):
                return self.driver_for_type(volume_type), cls.connection_info_from_disk(disk)
        return None
