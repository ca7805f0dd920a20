"""Live migration with CHAP volumes, on the two-host lab (tools/lab).

The source is this machine's libvirtd, the destination a lab host (its own
libvirtd, host UUID, initiator IQN and address; it reaches tgtd at
10.250.0.1:3260).  hvplug runs here and reaches the lab host by URI.
"""

import copy
import json
import subprocess
from pathlib import Path

import pytest

from hvplug import exception
from hvplug.target.tgtd_ipc import TgtdIPC
from hvplug.virt import migrate
from hvplug.virt.host import Host
from hvplug.virt.volume.registry import VolumeDriverRegistry
from tests.functional.helpers import (
    CLI,
    attach,
    disk_alias,
    domblklist,
    host_initiator,
    qemu_io,
    run_cli,
    virsh,
    wait_for,
)

pytest_plugins = ("tests.functional.lab",)


@pytest.fixture
def registry(host):
    return VolumeDriverRegistry(host)


@pytest.fixture
def dest(lab_host):
    h = Host(lab_host.uri)
    yield h
    h.close()


@pytest.fixture
def moved(lab_host, dest):
    """Names of guests that end up on the lab host: removed there at the end,
    with the secrets hvplug defined there for them."""
    names: list[str] = []
    yield names
    for name in names:
        lab_host.remove_guest(name)
    for secret in dest.call(lambda conn: conn.listAllSecrets()):
        if "hvplug" in (secret.XMLDesc() or "") and secret.usageID().startswith(
                "iqn.2010-10.org.openstack:volume-hvplug-test-"):
            secret.undefine()


def for_destination(volume, lab_host, **data) -> dict:
    """The connection_info the storage side gives for the destination host."""
    info = copy.deepcopy(dict(volume))
    info["data"]["target_portal"] = f"{lab_host.peer_address}:3260"
    info["data"].update(data)
    return info


def dest_secrets(dest) -> set[str]:
    return {s.usageID() for s in dest.call(lambda conn: conn.listAllSecrets())}


def lab_qemu_io(lab_host, domain: str, qdev: str, command: str) -> str:
    """qemu-io in a lab guest's QEMU; its report, from the lab host's QEMU log."""
    log = lab_host.qemu_log_dir / f"{domain}.log"
    start = log.stat().st_size
    out = lab_host.virsh("qemu-monitor-command", domain, "--hmp", f'qemu-io -d {qdev} "{command}"')
    assert not out.strip(), out

    def report():
        text = log.read_bytes()[start:].decode(errors="replace")
        return text if " ops; " in text else ""
    return wait_for(report)


def test_a_guest_with_two_chap_volumes_migrates_and_its_data_follows(
        host, dest, registry, lab_host, make_guest, make_volume, moved):
    shared, own = make_volume(), make_volume()
    domain, neighbour = make_guest(), make_guest()
    shared_info = dict(shared)
    shared_info["multiattach"] = True
    devs = {}
    for volume, info in ((shared, shared_info), (own, dict(own))):
        devs[volume.iqn] = attach(domain, info, "--bus", "scsi")["dev"]
    neighbour_dev = attach(neighbour, shared_info, "--bus", "scsi")["dev"]
    source_secret = {v.iqn: host.find_secret("iscsi", v.usage_id).UUIDString()
                     for v in (shared, own)}
    qdev = disk_alias(host.domain_xml(domain), devs[own.iqn])
    assert "wrote 65536/65536" in qemu_io(domain, qdev, "write -P 0x6b 2097152 65536")

    moved.append(domain)
    progress: list[int] = []
    result = migrate.migrate_domain(
        host, registry, domain, lab_host.uri,
        infos=[for_destination(shared, lab_host, multiattach=True),
               for_destination(own, lab_host)],
        dest_initiator=lab_host.initiator, progress=progress.append)
    assert lab_host.has_guest(domain) and domain not in virsh("list", "--name").split()
    assert progress and progress[-1] == 100
    by_dev = {v["dev"]: v for v in result.volumes}
    # The own volume's secret is gone here; the shared one stays for the neighbour.
    assert by_dev[devs[own.iqn]]["source_released"] is True
    assert by_dev[devs[shared.iqn]]["source_released"] is False
    assert not host.secret_exists(source_secret[own.iqn])
    assert host.secret_exists(source_secret[shared.iqn])
    assert {shared.usage_id, own.usage_id} <= dest_secrets(dest)

    # The destination's disks: its IQN, its portal, its secrets; the data is there.
    xml = dest.domain_xml(domain)
    assert lab_host.initiator in xml and f"{lab_host.peer_address}" in xml
    report = lab_qemu_io(lab_host, domain, qdev, "read -P 0x6b 2097152 65536")
    assert "Pattern verification failed" not in report and "read 65536/65536" in report

    # hvplug list and verify on the destination see them.
    rc, out, err = run_cli("--connect", lab_host.uri, "verify", "--domain", domain)
    assert rc == 0, out + err
    rc, out, _ = run_cli("--connect", lab_host.uri, "list", "--domain", domain)
    assert shared.iqn in out and own.iqn in out

    # The neighbour leaves: the shared secret goes with its last user here.
    rc, _, err = run_cli("detach", "--domain", neighbour, "--dev", neighbour_dev)
    assert rc == 0, err
    assert not host.secret_exists(source_secret[shared.iqn])


def test_a_target_that_admits_only_the_destination_works_after_migration(
        host, dest, registry, lab_host, make_guest, make_volume, moved):
    volume = make_volume(acl_initiator=host_initiator())
    domain = make_guest()
    attach(domain, dict(volume), "--bus", "scsi")
    TgtdIPC().bind_initiator(volume.tid, name=lab_host.initiator)
    # This host is refused from now on; its QEMU's session stays up.
    subprocess.run(["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "unbind",
                    "--tid", str(volume.tid), "--initiator-name", host_initiator()],
                   check=True, capture_output=True)
    moved.append(domain)
    migrate.migrate_domain(host, registry, domain, lab_host.uri,
                           infos=[for_destination(volume, lab_host)],
                           dest_initiator=lab_host.initiator)
    assert lab_host.has_guest(domain)
    assert dest.domain_state(domain) == (True, False)
    assert host.find_secret("iscsi", volume.usage_id) is None  # released here


def test_a_wrong_destination_password_fails_before_the_guest_moves(
        host, dest, registry, lab_host, make_guest, make_volume):
    volume = make_volume()
    domain = make_guest()
    attach(domain, dict(volume), "--bus", "scsi")
    before = host.domain_xml(domain)
    with pytest.raises(exception.AuthenticationFailed):
        migrate.migrate_domain(host, registry, domain, lab_host.uri,
                               infos=[for_destination(volume, lab_host,
                                                      auth_password="not-the-password")],
                               dest_initiator=lab_host.initiator)
    assert not lab_host.has_guest(domain)
    assert volume.usage_id not in dest_secrets(dest)  # nothing left there
    assert host.domain_xml(domain) == before and domblklist(domain)
    assert host.secret_exists(host.find_secret("iscsi", volume.usage_id).UUIDString())


def test_migrating_back_and_the_cli(host, dest, lab_host, make_guest, make_volume, moved,
                                    tmp_path):
    volume = make_volume()
    domain = make_guest()
    attach(domain, dict(volume), "--bus", "scsi")
    info_file = tmp_path / "dest.json"
    info_file.write_text(json.dumps(for_destination(volume, lab_host)))
    moved.append(domain)
    rc, out, err = run_cli("migrate", "--domain", domain, "--to", lab_host.uri,
                           "--dest-initiator", lab_host.initiator,
                           "--connection-info", str(info_file), "--json")
    assert rc == 0, err
    assert "% of memory transferred" in err and volume.password not in out + err
    assert json.loads(out)["destination"] == lab_host.uri
    assert lab_host.has_guest(domain)

    # Back: this machine is the destination now (the volume's own connection_info).
    back = tmp_path / "back.json"
    back.write_text(json.dumps(dict(volume)))
    rc, out, err = run_cli("--connect", lab_host.uri, "migrate", "--domain", domain,
                           "--to", "qemu:///system", "--dest-initiator", host_initiator(),
                           "--connection-info", str(back), "--json")
    assert rc == 0, err
    assert domain in virsh("list", "--name").split() and not lab_host.has_guest(domain)
    assert volume.usage_id not in dest_secrets(dest)
    assert domblklist(domain)


HVPLUG = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "hvplug"


def test_the_split_form(host, dest, lab_host, make_guest, make_volume, moved, tmp_path):
    """migrate-prepare run on the destination itself (inside the lab host, with
    its own libvirtd and IQN), then migrate --prepared here; migrate-abort undoes
    a preparation that is not used."""
    volume = make_volume()
    domain = make_guest()
    attach(domain, dict(volume), "--bus", "scsi")
    (tmp_path / "dest.json").write_text(json.dumps(for_destination(volume, lab_host)))
    prepare = lab_host.run(str(HVPLUG), "migrate-prepare", "--domain", domain,
                           "--connection-info", str(tmp_path / "dest.json"), "--json")
    assert prepare.returncode == 0, prepare.stderr
    prepared = json.loads(prepare.stdout)
    assert volume.password not in prepare.stdout + prepare.stderr
    assert prepared["initiator"] == lab_host.initiator
    assert lab_host.initiator in prepared["volumes"][0]["source_xml"]
    assert volume.usage_id in dest_secrets(dest)

    undo = lab_host.run(str(HVPLUG), "migrate-abort", "--domain", domain,
                        "--connection-info", str(tmp_path / "dest.json"))
    assert undo.returncode == 0, undo.stderr
    assert volume.usage_id not in dest_secrets(dest)

    prepare = lab_host.run(str(HVPLUG), "migrate-prepare", "--domain", domain,
                           "--connection-info", str(tmp_path / "dest.json"), "--json")
    assert prepare.returncode == 0, prepare.stderr
    (tmp_path / "prepared.json").write_text(prepare.stdout)
    moved.append(domain)
    rc, out, err = run_cli("migrate", "--domain", domain, "--to", lab_host.uri,
                           "--prepared", str(tmp_path / "prepared.json"), "--json")
    assert rc == 0, err
    assert lab_host.has_guest(domain)
    assert json.loads(out)["volumes"][0]["source_released"] is True
    assert host.find_secret("iscsi", volume.usage_id) is None


def _owned_test_secrets(h: Host) -> dict[str, str]:
    """usage -> uuid of the hvplug-owned secrets of test volumes on host ``h``."""
    return {s.usageID(): s.UUIDString() for s in h.call(lambda conn: conn.listAllSecrets())
            if s.usageID().startswith("iqn.2010-10.org.openstack:volume-hvplug-test-")
            and "hvplug-owned" in s.XMLDesc()}


def _secrets_in_use(h: Host) -> set[str]:
    from hvplug.virt import guest_disks
    used = set()
    for name in h.call(lambda conn: [d.name() for d in conn.listAllDomains()]):
        for disk in guest_disks.disks(h.domain_xml(name)):
            if disk.auth_secret_uuid:
                used.add(disk.auth_secret_uuid)
    return used


def _check_host(h: Host, label: str) -> None:
    """Every disk's secret exists, and no hvplug secret of a test volume is orphaned."""
    owned, used = _owned_test_secrets(h), _secrets_in_use(h)
    existing = {s.UUIDString() for s in h.call(lambda conn: conn.listAllSecrets())}
    assert used <= existing, f"{label}: a disk names a missing secret"
    orphans = {usage for usage, uuid in owned.items() if uuid not in used}
    assert not orphans, f"{label}: orphan secrets {orphans}"


@pytest.mark.parametrize("round_", range(3))
def test_a_migration_racing_an_attach_and_another_migration(
        host, dest, lab_host, make_guest, make_volume, moved, tmp_path, round_):
    """Three hvplug processes at once on one guest: two migrations and an attach.

    The domain lock orders them; whatever order they take, the guest runs on
    exactly one host, every disk's secret is there, and no host keeps a
    secret nothing uses."""
    volume, other = make_volume(), make_volume()
    domain = make_guest()
    attach(domain, dict(volume), "--bus", "scsi")
    moved.append(domain)
    dest_info = tmp_path / "dest.json"
    dest_info.write_text(json.dumps(for_destination(volume, lab_host)))
    other_info = tmp_path / "other.json"
    other_info.write_text(json.dumps(dict(other)))
    migrate_argv = [*CLI, "migrate", "--domain", domain, "--to", lab_host.uri,
                    "--dest-initiator", lab_host.initiator, "--connection-info", str(dest_info)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in (migrate_argv,
                          [*CLI, "attach", "--domain", domain, "--connection-info",
                           str(other_info), "--bus", "scsi"],
                          migrate_argv)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for rc, _, err in results:
        assert rc in (0, 1, 2), err
        assert "Traceback" not in err and "unexpected" not in err, err
        assert volume.password not in err and other.password not in err
    migrated = [rc for rc, _, _ in (results[0], results[2])].count(0)
    on_lab, here = lab_host.has_guest(domain), domain in virsh("list", "--name").split()
    assert on_lab != here, results
    assert migrated == (1 if on_lab else 0), results
    assert volume.usage_id in _owned_test_secrets(dest if on_lab else host)
    _check_host(host, "source")
    _check_host(dest, "destination")


@pytest.mark.parametrize("round_", range(2))
def test_sigint_during_the_migration(host, dest, lab_host, make_guest, make_volume, moved,
                                     tmp_path, round_):
    """Ctrl-C once the migration shows progress: the job is aborted (the guest
    stays here, the destination's part is undone) or, if it was done already,
    the source is released; never half of each (the abort itself is proven
    deterministically in tests/unit/virt/test_migrate.py)."""
    import signal
    volume = make_volume()
    domain = make_guest()
    attach(domain, dict(volume), "--bus", "scsi")
    moved.append(domain)
    (tmp_path / "dest.json").write_text(json.dumps(for_destination(volume, lab_host)))
    proc = subprocess.Popen([*CLI, "migrate", "--domain", domain, "--to", lab_host.uri,
                             "--dest-initiator", lab_host.initiator, "--connection-info",
                             str(tmp_path / "dest.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first progress line: the job runs
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = first + rest
    assert "Traceback" not in err and "unexpected" not in err, err
    on_lab, here = lab_host.has_guest(domain), domain in virsh("list", "--name").split()
    assert on_lab != here, err
    assert (proc.returncode == 0) == on_lab, (proc.returncode, err)
    if here:
        assert "still runs here" in err and volume.usage_id not in dest_secrets(dest), err
    _check_host(host, "source")
    _check_host(dest, "destination")
