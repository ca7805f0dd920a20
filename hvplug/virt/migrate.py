"""Live migration of a guest with its hvplug volumes, Nova's way.

A CHAP secret is private to its host (its value cannot be read back), and
a disk names its host's initiator IQN, so ``virsh migrate`` alone fails
("Secret not found") or meets a target whose ACL admits only the
destination.  Nova's ``pre_live_migration`` / ``post_live_migration`` is
the model:

1. **prepare** (on the destination): connect every volume there, from the
   ``connection_info`` the storage side gave for the destination (Cinder
   hands one out per host), as the destination's IQN: the portal is probed
   and the credentials proven by a login before the secret is defined;
2. **migrate** (from the source): every volume disk of the live (and, with
   ``persistent``, the persistent) XML is rewritten for the destination
   (its portal, IQN, user and secret uuid) and ``virDomainMigrate3`` runs
   with that XML;
3. **release** (on the source): each volume's secret is released when
   nothing on the source needs it any more (a second guest sharing it
   keeps it).

Any failure before the guest moved undoes the destination's part (its
secrets), and the guest runs on, unchanged, on the source.

Two forms: :func:`migrate_domain` does all three from the source, reaching
the destination's libvirt by URI; orchestrators that run code on each host
use :func:`prepare` on the destination (its JSON, :class:`Prepared`, goes
to the source), then ``migrate_domain(..., prepared=...)`` on the source,
or :func:`abort` on the destination if the migration does not happen.

Host-attached (block) volumes need a login on the destination host
itself and are refused, as are volumes below an overlay (block-commit
first).
"""

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from lxml import etree

from hvplug import connection_schema, exception
from hvplug.utils import interrupts, locks
from hvplug.virt import attach, config, guest_disks
from hvplug.virt.host import Host
from hvplug.virt.volume.base import VolumeConnection
from hvplug.virt.volume.net import LibvirtNetVolumeDriver
from hvplug.virt.volume.registry import VolumeDriverRegistry

LOG = logging.getLogger(__name__)

_WATCH_TICK = 0.05  # seconds between looks for a held signal while migrating
_PROGRESS_TICKS = 5  # jobStats every 5 ticks: progress 4 times a second


@dataclasses.dataclass
class PreparedVolume:
    """One volume connected on the destination: what the source needs."""

    volume: str          # its serial (or volume_id), for messages
    source_name: str     # the <iqn>/<lun> the destination reaches
    match: list[str]     # the <iqn>/<lun>s it may have on the source
    source_xml: str      # the destination's <source> element of the disk
    secret_uuid: str | None
    portal: str | None


@dataclasses.dataclass
class Prepared:
    """What :func:`prepare` made on the destination (JSON for the source)."""

    domain: str
    initiator: str
    volumes: list[PreparedVolume]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document) -> "Prepared":
        try:
            volumes = [PreparedVolume(**v) for v in document["volumes"]]
            return cls(domain=document["domain"], initiator=document["initiator"],
                       volumes=volumes)
        except (KeyError, TypeError) as exc:
            raise exception.InvalidInput(
                reason=f"not what 'hvplug migrate-prepare --json' prints ({exc}); pass its "
                "output unchanged") from None


@dataclasses.dataclass
class MigrateResult:
    domain: str
    destination: str
    seconds: float
    persistent: bool
    volumes: list[dict]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Volume:
    """A volume disk of the domain on the source."""

    dev: str
    driver: LibvirtNetVolumeDriver
    layer: config.LibvirtConfigGuestDisk
    info: dict  # for the source: rebuilt from the disk
    dest_info: dict | None = None  # for the destination: as given

    @property
    def name(self) -> str:
        return attach.volume_name(self.dest_info or self.info)


def volume_disks(registry: VolumeDriverRegistry, domain: str, xml: str) -> list[_Volume]:
    """The hvplug volumes among ``xml``'s disks; refuses what cannot move."""
    found = []
    root = etree.fromstring(xml.encode())
    for element in root.iterfind("./devices/disk"):
        for kind, _depth, layer in guest_disks.layers(element):
            handled = registry.driver_for_disk(layer)
            if handled is None:
                continue
            driver, info = handled
            dev = element.find("target").get("dev")
            if kind != "source":
                raise exception.InvalidInput(
                    reason=f"volume {attach.volume_name(info)} is a {kind} layer of {dev} on "
                    f"'{domain}' (below an overlay); block-commit it into the top first")
            if layer.encryption_format:
                raise exception.InvalidInput(
                    reason=f"{dev} on '{domain}' is an encrypted (LUKS) volume, whose "
                    "passphrase secret hvplug does not move yet: detach it first")
            if not isinstance(driver, LibvirtNetVolumeDriver):
                raise exception.InvalidInput(
                    reason=f"{dev} on '{domain}' is a host-attached volume "
                    f"({info['driver_volume_type']}, {layer.source_path}); hvplug migrates "
                    "network disks (QEMU's initiator) only: detach it first")
            found.append(_Volume(dev=dev, driver=driver, layer=layer, info=info))
            break
    return found


def _match(volumes: list[_Volume], infos: list[dict], registry: VolumeDriverRegistry,
           chap_needs_one: bool = True) -> None:
    """Pair each volume with the destination's connection_info; CHAP needs
    one (unless the destination prepared the volumes itself)."""
    for info in infos:
        driver = attach.checked_driver(registry, info)
        owners = [v for v in volumes if driver.is_same_volume(v.layer, info)]
        if not owners:
            raise exception.InvalidInput(
                reason=f"connection_info of volume {attach.volume_name(info)} matches no "
                "volume of the domain; leave it out")
        for volume in owners:
            volume.dest_info = info
    missing = [v for v in volumes if chap_needs_one and v.dest_info is None
               and (v.layer.auth_secret_uuid or v.layer.auth_secret_usage)]
    if missing:
        raise exception.InvalidInput(
            reason="CHAP volume(s) " + ", ".join(f"{v.name} ({v.dev})" for v in missing)
            + " need the connection_info the storage side gave for the destination "
            "(--connection-info F, once per volume): a CHAP secret's value cannot be "
            "read back on this host to define it there")


def prepare(dest: Host, registry: VolumeDriverRegistry, domain: str, infos: list[dict],
            initiator: str | None = None, match: dict[str, list[str]] | None = None
            ) -> Prepared:
    """Connect each volume of ``infos`` on ``dest`` for ``domain`` (as
    ``initiator``, default: this host's IQN): portal probed, credentials
    proven, secret defined.  ``match``: volume name -> the ``<iqn>/<lun>``
    the source's disk has, when it differs from the destination's.  All or
    nothing: a failure undoes what was connected.

    Every document is checked before anything is made; then the volumes are
    connected at once, one thread each (each under its own secret-usage
    locks), since their probes and proving logins wait on the network and
    on ``qemu-img``, not on each other."""
    checked: list[tuple[LibvirtNetVolumeDriver, dict]] = []
    for info in infos:
        driver = attach.checked_driver(registry, info)
        if not isinstance(driver, LibvirtNetVolumeDriver):
            raise exception.InvalidInput(
                reason=f"volume {attach.volume_name(info)} is "
                f"{info['driver_volume_type']}, attached by the host; hvplug migrates "
                "network disks (QEMU's initiator) only")
        driver.initiator, driver.prove_new = initiator, True
        checked.append((driver, info))
    connections = _connect_all(dest, checked, domain)
    try:
        prepared = []
        for (driver, info), connection in zip(checked, connections, strict=True):
            name = attach.volume_name(info)
            disk = driver.get_config(connection, {"dev": "sda", "bus": "scsi"})
            source = disk.format_dom().find("source")
            targets = driver.validate(info)
            prepared.append(PreparedVolume(
                volume=name, source_name=disk.source_name,
                match=(match or {}).get(name) or [t.source_name for t in targets],
                source_xml=etree.tostring(source, encoding="unicode"),
                secret_uuid=connection.secret_uuid, portal=connection.portal))
        iqn = initiator or LibvirtNetVolumeDriver(dest).initiator_iqn()
    except BaseException:
        _undo(list(zip((d for d, _ in checked), connections, strict=True)), domain)
        raise
    return Prepared(domain=domain, initiator=iqn, volumes=prepared)


def _connect_all(dest: Host, checked: list[tuple[LibvirtNetVolumeDriver, dict]],
                 domain: str) -> list[VolumeConnection]:
    """``connect_volume`` of every ``(driver, info)``, all at once; all or
    nothing.  The error raised is the first volume's (in order) that failed;
    on any failure or interrupt, the threads end first, then what they
    connected is undone."""
    connections: list[VolumeConnection | None] = [None] * len(checked)
    errors: list[BaseException | None] = [None] * len(checked)

    def one(index: int) -> None:
        driver, info = checked[index]
        operation = f"prepare volume {attach.volume_name(info)} for domain '{domain}'"
        try:
            with locks.all_of(driver.lock_names(info), operation):
                connections[index] = driver.connect_volume(info, domain)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            errors[index] = exc

    def made() -> list[tuple[LibvirtNetVolumeDriver, VolumeConnection]]:
        return [(driver, c) for (driver, _), c in zip(checked, connections, strict=True)
                if c is not None]

    if len(checked) == 1:
        one(0)
    else:
        dest.connection()  # opened once, before the threads share it
        threads = [threading.Thread(target=one, args=(index,), daemon=True,
                                    name=f"hvplug-prepare-{index}")
                   for index in range(len(checked))]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:  # interrupted: let the threads end, then undo all
            with interrupts.deferred():
                for thread in threads:
                    thread.join()
                _undo(made(), domain)
            raise
    failed = next((e for e in errors if e is not None), None)
    if failed is not None:
        _undo(made(), domain)
        raise failed
    return [c for c in connections if c is not None]


def abort(dest: Host, registry: VolumeDriverRegistry, domain: str, infos: list[dict]) -> list[str]:
    """Undo :func:`prepare` on the destination (the migration did not
    happen): release each volume's secret unless something there uses it."""
    released = []
    for info in infos:
        driver = attach.checked_driver(registry, info)
        with locks.all_of(driver.lock_names(info), f"abort the migration of '{domain}'"):
            driver.disconnect_volume(VolumeConnection(info), domain)
        released.append(attach.volume_name(info))
    return released


def _undo(made, domain: str) -> list[str]:
    left = []
    for driver, connection in reversed(made):
        try:
            with locks.all_of(driver.lock_names(connection.connection_info),
                              f"undo the migration of '{domain}'"):
                driver.disconnect_volume(connection, domain)
        except Exception as exc:
            LOG.exception("undoing volume %s on the destination failed",
                          attach.volume_name(connection.connection_info))
            left.append(f"{attach.volume_name(connection.connection_info)}: "
                        f"{getattr(exc, 'message', exc)}")
    return left


def rewrite_xml(xml: str, volumes: list[_Volume], prepared: Prepared) -> str:
    """``xml`` with each volume disk's ``<source>`` replaced by the destination's."""
    root = etree.fromstring(xml.encode())
    by_dev = {v.dev: v for v in volumes}
    for element in root.iterfind("./devices/disk"):
        target = element.find("target")
        volume = by_dev.get(target.get("dev") or "") if target is not None else None
        if volume is None:
            continue
        entry = next((p for p in prepared.volumes if volume.layer.source_name in p.match),
                     None)
        if entry is None:
            raise exception.InvalidInput(
                reason=f"the destination prepared no volume for {volume.dev} "
                f"({volume.layer.source_name}); prepare it there too")
        old = element.find("source")
        new = etree.fromstring(entry.source_xml.encode())
        if old is not None:
            new.tail = old.tail
            element.replace(old, new)
        for legacy in element.findall("auth"):  # inside <source> now
            element.remove(legacy)
    return etree.tostring(root, encoding="unicode")


def migrate_domain(host: Host, registry: VolumeDriverRegistry, domain: str, dest_uri: str,
                   infos: list[dict] | None = None, dest_initiator: str | None = None,
                   persistent: bool = False, migrate_uri: str | None = None,
                   prepared: Prepared | None = None,
                   progress: Callable[[int], None] | None = None) -> MigrateResult:
    """Live-migrate ``domain`` from ``host`` to ``dest_uri`` with its volumes.

    Without ``prepared``, the destination's part runs from here through its
    libvirt (``infos``: the destination's connection_info per volume;
    ``dest_initiator``: its IQN, which the disks name and the logins use).
    ``persistent``: the destination gets the persistent definition too and
    the source's goes.  ``progress(percent)``: memory transferred so far.
    """
    start = time.monotonic()
    infos = [copy.deepcopy(i) for i in infos or []]
    if prepared is None and not dest_initiator:
        raise exception.InvalidInput(
            reason="give the destination's initiator IQN (--dest-initiator; its "
            "/etc/iscsi/initiatorname.iscsi): its disks name it and its logins use it")
    if dest_initiator:
        try:
            connection_schema.iqn(dest_initiator, "--dest-initiator")
        except exception.InvalidInput as exc:  # not a connection_info key: plain bad input
            raise exception.InvalidInput(reason=exc.kwargs["reason"]) from None
    operation = f"migrate domain '{domain}' to {dest_uri}"
    interrupts.begin()
    with attach.locked_view(host, domain, operation) as view:
        if not view.active or view.live_xml is None:
            raise exception.InvalidInput(
                reason=f"domain '{domain}' is not running: a live migration moves a running "
                "domain (a shut-off one is defined on the other host instead)")
        volumes = volume_disks(registry, domain, view.live_xml)
        _match(volumes, infos, registry, chap_needs_one=prepared is None)
        dest = None if prepared is not None else Host(dest_uri)
        try:
            made_here = dest is not None
            if dest is not None:
                dest_registry = VolumeDriverRegistry(dest)
                prepared = prepare(dest, dest_registry, domain,
                                   [v.dest_info or v.info for v in volumes], dest_initiator,
                                   match={attach.volume_name(v.dest_info or v.info):
                                          [v.layer.source_name] for v in volumes})
            # From here on a signal waits: once libvirt moved the guest, the
            # source's secrets must be released; while it moves, the watcher
            # aborts the job (the guest then stays here) instead.
            with interrupts.deferred():
                try:
                    assert prepared is not None
                    _run_migration(host, domain, dest_uri, dest, volumes, prepared,
                                   persistent, view.persistent, migrate_uri, progress)
                except BaseException:
                    if made_here and dest is not None:
                        _undo_prepared(dest, domain, volumes)
                    raise
                released = _release_source(host, domain, volumes)
                interrupts.commit()
        finally:
            if dest is not None:
                dest.close()
    seconds = round(time.monotonic() - start, 3)
    LOG.info("migrated %s to %s in %.3f s (%d volumes)", domain, dest_uri, seconds,
             len(volumes))
    return MigrateResult(
        domain=domain, destination=dest_uri, seconds=seconds, persistent=persistent,
        volumes=[{"volume": v.name, "dev": v.dev,
                  "source_secret_uuid": v.layer.auth_secret_uuid,
                  "destination_secret_uuid": next((p.secret_uuid for p in prepared.volumes
                                              if v.layer.source_name in p.match), None),
                  "source_released": released.get(v.dev, False)}
                 for v in volumes])


def _undo_prepared(dest: Host, domain: str, volumes: list[_Volume]) -> None:
    dest_registry = VolumeDriverRegistry(dest)
    for volume in volumes:
        info = volume.dest_info or volume.info
        driver = dest_registry.driver_for(info)
        try:
            with locks.all_of(driver.lock_names(info), f"undo the migration of '{domain}'"):
                driver.disconnect_volume(VolumeConnection(info), domain)
        except Exception:
            LOG.exception("undoing volume %s on the destination failed", volume.name)


def _run_migration(host: Host, domain: str, dest_uri: str, dest: Host | None,
                   volumes: list[_Volume], prepared: Prepared, persistent: bool,
                   source_persistent: bool, migrate_uri: str | None,
                   progress: Callable[[int], None] | None) -> None:
    lib = host.libvirt
    flags = lib.VIR_MIGRATE_LIVE
    live_xml = host.domain_call(domain, lambda dom: dom.XMLDesc(lib.VIR_DOMAIN_XML_MIGRATABLE))
    params = {lib.VIR_MIGRATE_PARAM_DEST_XML: rewrite_xml(live_xml, volumes, prepared)}
    if migrate_uri:
        params[lib.VIR_MIGRATE_PARAM_URI] = migrate_uri
    if persistent:
        flags |= lib.VIR_MIGRATE_PERSIST_DEST
        base = live_xml
        if source_persistent:
            flags |= lib.VIR_MIGRATE_UNDEFINE_SOURCE
            base = host.domain_call(domain, lambda dom: dom.XMLDesc(
                lib.VIR_DOMAIN_XML_INACTIVE | lib.VIR_DOMAIN_XML_MIGRATABLE))
        params[lib.VIR_MIGRATE_PARAM_PERSIST_XML] = rewrite_xml(base, volumes, prepared)
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(host, domain, done, progress),
                               daemon=True, name="hvplug-migrate-watch")
    watcher.start()
    try:
        if dest is not None:
            dconn = dest.connection()
            host.domain_call(domain, lambda dom: dom.migrate3(dconn, params, flags))
        else:  # the destination's libvirt is reached by the source's libvirtd
            host.domain_call(domain, lambda dom: dom.migrateToURI3(
                dest_uri, params, flags | lib.VIR_MIGRATE_PEER2PEER))
    except lib.libvirtError as exc:
        undone = ("what was prepared on the destination was removed." if dest is not None
                  else "run 'hvplug migrate-abort' there to remove what migrate-prepare made.")
        raise exception.MigrationFailed(domain=domain, destination=dest_uri,
                                        reason=exc.get_error_message() or str(exc),
                                        undone=undone) from None
    finally:
        done.set()
        watcher.join()
    if progress is not None:
        progress(100)


def _watch(host: Host, domain: str, done: threading.Event,
           progress: Callable[[int], None] | None) -> None:
    """While the migration runs: ``progress(percent of memory transferred)``,
    and the job aborted when SIGINT/SIGTERM came (libvirt then keeps the
    guest on the source, and the caller undoes the destination's part)."""
    last, aborted, tick = -1, False, 0
    while not done.wait(_WATCH_TICK):
        tick += 1
        try:
            if interrupts.held() and not aborted:
                aborted = True
                LOG.warning("%s: aborting the migration of %s", interrupts.held(), domain)
                host.domain_call(domain, lambda dom: dom.abortJob())
            if progress is None or tick % _PROGRESS_TICKS:
                continue
            stats = host.domain_call(domain, lambda dom: dom.jobStats())
        except (exception.HvplugError, host.libvirt.libvirtError):
            return  # the domain left this host: the migration is at its end
        total = stats.get("memory_total") or 0
        if total:
            percent = min(99, int(100 * (stats.get("memory_processed") or 0) / total))
            if percent != last:
                progress(percent)
                last = percent


def _release_source(host: Host, domain: str, volumes: list[_Volume]) -> dict[str, bool]:
    """Release each volume's secret on the source unless something here needs it."""
    released = {}
    for volume in volumes:
        connection = volume.driver.connection_of(volume.info, volume.layer)
        uuid = connection.secret_uuid
        before = bool(uuid and host.secret_exists(uuid))
        try:
            with locks.all_of(volume.driver.lock_names(volume.info),
                              f"release volume {volume.name} after migrating '{domain}'"):
                volume.driver.disconnect_volume(connection, domain)
        except Exception:
            LOG.exception("releasing volume %s on the source failed; 'hvplug reconcile' "
                          "removes an orphan secret", volume.name)
            continue
        released[volume.dev] = bool(uuid and before and not host.secret_exists(uuid))
    return released
