"""The parts of a migration that need no second host (the lab tests run the rest)."""

import copy
import threading

import pytest

from hvplug import exception
from hvplug.virt import attach, migrate
from hvplug.virt.migrate import Prepared, PreparedVolume

DEST_IQN = "iqn.2026-12.org.hvplug.lab:hvplug-lab-1"


def live_xml(host, guest):
    return host.domain_xml(guest)


def test_volume_disks_and_rewrite_for_the_destination(host, registry, guest, make_info):
    info = make_info()
    result = attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi")
    volumes = migrate.volume_disks(registry, guest, live_xml(host, guest))
    (volume,) = volumes
    source_name = f"{info['data']['target_iqn']}/1"
    assert (volume.dev, volume.layer.source_name) == (result.dev, source_name)
    dest_source = ("<source protocol='iscsi' name='iqn.x:dest/3'><host name='10.250.0.1' "
                   f"port='3260'/><initiator><iqn name='{DEST_IQN}'/></initiator>"
                   "<auth username='u2'><secret type='iscsi' "
                   "uuid='11111111-2222-3333-4444-555555555555'/></auth></source>")
    prepared = Prepared(domain=guest, initiator=DEST_IQN, volumes=[PreparedVolume(
        volume="v", source_name="iqn.x:dest/3", match=[source_name], source_xml=dest_source,
        secret_uuid="11111111-2222-3333-4444-555555555555", portal="10.250.0.1:3260")])
    xml = migrate.rewrite_xml(live_xml(host, guest), volumes, prepared)
    from hvplug.virt import guest_disks
    (disk,) = [d for d in guest_disks.disks(xml) if d.target_dev == result.dev]
    assert (disk.source_name, disk.source_hosts, disk.source_initiator_iqn) == (
        "iqn.x:dest/3", [("10.250.0.1", "3260")], DEST_IQN)
    assert disk.auth_secret_uuid == "11111111-2222-3333-4444-555555555555"
    assert Prepared.from_dict(prepared.to_dict()) == prepared


def test_a_chap_volume_without_the_destinations_connection_info_is_refused(
        host, registry, guest, make_info):
    info = make_info()
    attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi")
    with pytest.raises(exception.InvalidInput) as err:
        migrate.migrate_domain(host, registry, guest, "qemu+tcp://192.0.2.1/system",
                               dest_initiator=DEST_IQN)
    assert info["serial"] in err.value.message and "--connection-info" in err.value.message
    assert err.value.exit_code == 2


def test_a_connection_info_of_no_volume_of_the_domain_is_refused(host, registry, guest,
                                                                 make_info):
    with pytest.raises(exception.InvalidInput, match="matches no volume"):
        migrate.migrate_domain(host, registry, guest, "qemu+tcp://192.0.2.1/system",
                               infos=[make_info()], dest_initiator=DEST_IQN)


def test_the_destination_initiator_is_needed(host, registry, guest):
    with pytest.raises(exception.InvalidInput, match="--dest-initiator"):
        migrate.migrate_domain(host, registry, guest, "qemu+tcp://192.0.2.1/system")


@pytest.mark.parametrize("document", [{}, {"domain": "g"}, {"domain": "g", "initiator": "i",
                                                            "volumes": [{"x": 1}]}])
def test_a_malformed_prepared_file_is_bad_input(document):
    with pytest.raises(exception.InvalidInput, match="migrate-prepare --json"):
        Prepared.from_dict(document)


@pytest.mark.parametrize("iqn", ["not an iqn", "iqn.x y", "iqn.\x1b[31m"])
def test_a_malformed_destination_initiator_is_bad_input(host, registry, guest, iqn):
    with pytest.raises(exception.InvalidInput, match="--dest-initiator") as err:
        migrate.migrate_domain(host, registry, guest, "qemu+tcp://192.0.2.1/system",
                               dest_initiator=iqn)
    assert err.value.exit_code == 2 and type(err.value) is exception.InvalidInput


class _MigratingDomain:
    """A domain whose migrate3 runs until it ends or abortJob() stops it."""

    def __init__(self, lib):
        self.lib, self.aborted = lib, threading.Event()
        self.calls: list[str] = []

    def XMLDesc(self, flags=0):
        return "<domain><name>g</name><devices/></domain>"

    def migrate3(self, dconn, params, flags):
        self.calls.append("migrate3")
        if not self.aborted.wait(5):
            return object()
        raise self.lib.libvirtError("operation aborted: migration out job: canceled by client")

    def abortJob(self):
        self.calls.append("abortJob")
        self.aborted.set()

    def jobStats(self):
        return {"memory_total": 100, "memory_processed": 10}


class _Host:
    def __init__(self, dom):
        import libvirt
        self.libvirt, self.dom = libvirt, dom

    def domain_call(self, name, func):
        return func(self.dom)

    def connection(self):
        return None


def test_a_signal_held_during_the_migration_aborts_the_job(monkeypatch):
    """SIGINT/SIGTERM while libvirt moves the guest: the watcher aborts the
    job, libvirt keeps the guest on the source, the caller sees MigrationFailed."""
    pytest.importorskip("libvirt")
    host = _Host(None)
    dom = _MigratingDomain(host.libvirt)
    host.dom = dom
    monkeypatch.setattr(migrate.interrupts, "held", lambda: "SIGINT")
    progress: list[int] = []
    with pytest.raises(exception.MigrationFailed) as err:
        migrate._run_migration(host, "g", "qemu+tcp://192.0.2.1/system", _Host(dom), [],
                               Prepared(domain="g", initiator=DEST_IQN, volumes=[]),
                               persistent=False, source_persistent=False, migrate_uri=None,
                               progress=progress.append)
    assert dom.calls == ["migrate3", "abortJob"]
    assert "canceled by client" in err.value.message
    assert "what was prepared on the destination was removed" in err.value.message
