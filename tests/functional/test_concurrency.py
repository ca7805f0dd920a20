"""hvplug is never alone: real parallel ``hvplug`` processes on the real daemons.

Each test starts several CLI processes at once, over several rounds, and
checks what libvirt and tgtd hold afterwards, not only the exit codes.
"""

import json
import os
import subprocess

import pytest

from hvplug.conf import CONF
from hvplug.utils import locks
from tests.functional.helpers import (
    CLI,
    CLI_TIMEOUT,
    attach,
    detach,
    domblklist,
    run_cli,
)

PARALLEL_ATTACHES = 8
ATTACH_ROUNDS = 2
RACE_ROUNDS = 12


def start(*args: str, info=None) -> subprocess.Popen:
    """``hvplug ARGS --json`` started now; the connection_info goes on stdin."""
    argv = [*CLI, *args, "--json"]
    if info is not None:
        argv += ["--connection-info", "-"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(info) if info is not None else "")
    proc.stdin.close()
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, dict, str]:
    out, err = proc.stdout.read(), proc.stderr.read()
    rc = proc.wait(timeout=CLI_TIMEOUT)
    return rc, (json.loads(out) if out.strip() else {}), err


def disk_secret(host, domain: str, dev: str) -> str | None:
    """The secret uuid the live disk ``dev`` of ``domain`` references."""
    from hvplug.virt import guest_disks
    found = guest_disks.find_disk(host.domain_xml(domain), lambda d: d.target_dev == dev)
    return found.disk.auth_secret_uuid if found else None


def test_parallel_attaches_into_one_guest_get_distinct_names(host, make_guest, make_volume):
    domain = make_guest()
    for _ in range(ATTACH_ROUNDS):
        volumes = [make_volume(size_mib=8) for _ in range(PARALLEL_ATTACHES)]
        procs = [start("attach", "--domain", domain, "--bus", "scsi", info=v) for v in volumes]
        results = [finish(p) for p in procs]
        assert [rc for rc, _, _ in results] == [0] * PARALLEL_ATTACHES, [
            err for _, _, err in results]
        devs = {out["dev"] for _, out, _ in results}
        assert len(devs) == PARALLEL_ATTACHES
        assert domblklist(domain) == {out["dev"]: v.usage_id
                                      for (_, out, _), v in zip(results, volumes, strict=True)}
        for (_, out, _), volume in zip(results, volumes, strict=True):
            assert disk_secret(host, domain, out["dev"]) == out["secret_uuid"]
            assert host.secret_exists(out["secret_uuid"]), volume.usage_id

        procs = [start("detach", "--domain", domain, info=v) for v in volumes]
        assert [finish(p)[0] for p in procs] == [0] * PARALLEL_ATTACHES
        assert domblklist(domain) == {}
        assert not any(host.secret_exists(out["secret_uuid"]) for _, out, _ in results)


def test_detach_from_a_racing_attach_to_b_keeps_b_whole(host, make_guest, make_volume):
    """B must always end with its disk and the secret that disk references."""
    first, second = make_guest(), make_guest()
    volume = make_volume(size_mib=8)
    attach(first, volume)
    for round_ in range(RACE_ROUNDS):
        # Alternate who starts first, so both orders of the race are tried.
        starts = [("detach", "--domain", first), ("attach", "--domain", second, "--bus", "scsi")]
        if round_ % 2:
            starts.reverse()
        procs = {args[0]: start(*args, info=volume) for args in starts}
        results = {name: finish(proc) for name, proc in procs.items()}
        assert results["detach"][0] == 0, results["detach"][2]
        assert results["attach"][0] == 0, results["attach"][2]
        dev = results["attach"][1]["dev"]
        assert domblklist(first) == {}
        assert domblklist(second) == {dev: volume.usage_id}
        uuid = disk_secret(host, second, dev)
        assert uuid and host.secret_exists(uuid), f"round {round_}: B lost its secret"
        rc, _out, err = run_cli("verify", "--domain", second)
        assert rc == 0, err
        # Swap roles for the next round: the volume moves back to A.
        detach(second, volume)
        assert not host.secret_exists(uuid)
        attach(first, volume)


def test_a_lock_wait_ends_naming_the_holder(host, make_guest, make_volume, tmp_path):
    domain, volume = make_guest(), make_volume(size_mib=8)
    conf = tmp_path / "hvplug.conf"
    conf.write_text(f"[locks]\nlock_path = {CONF.locks.lock_path}\nlock_timeout = 0.5\n")
    uuid = host.domain_info(domain).uuid
    with locks.domain_lock(uuid, "a test holding the domain"):
        rc, _out, err = run_cli("--config-file", str(conf), "attach", "--domain", domain,
                               "--bus", "scsi", info=volume)
    assert rc == 1, err
    assert f"pid {os.getpid()}: a test holding the domain" in err
    assert "[locks] lock_timeout" in err
    assert domblklist(domain) == {}
    assert host.find_secret("iscsi", volume.usage_id) is None
    # Released: the same attach now goes through.
    assert attach(domain, volume)["dev"] == "sda"


@pytest.mark.parametrize("workers", [1, 4])
def test_bulk_threads_and_processes_share_one_guest(host, registry_for, make_guest,
                                                    make_volume, workers):
    """In-process bulk threads and a CLI process attach into one guest at once."""
    from hvplug.virt import bulk
    domain = make_guest()
    mine = [make_volume(size_mib=8) for _ in range(4)]
    theirs = [make_volume(size_mib=8) for _ in range(2)]
    procs = [start("attach", "--domain", domain, "--bus", "scsi", info=v) for v in theirs]
    outcomes = bulk.attach_volumes(host, registry_for(host), domain, mine, bus="scsi",
                                   workers=workers)
    results = [finish(p) for p in procs]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert [rc for rc, _, _ in results] == [0, 0], [err for _, _, err in results]
    devs = [o.result["dev"] for o in outcomes] + [out["dev"] for _, out, _ in results]
    assert len(set(devs)) == 6
    assert set(domblklist(domain)) == set(devs)
    outcomes = bulk.detach_volumes(host, registry_for(host), domain, [*mine, *theirs],
                                   workers=workers)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert domblklist(domain) == {}


@pytest.fixture
def registry_for():
    from hvplug.virt.volume.registry import VolumeDriverRegistry
    return VolumeDriverRegistry
