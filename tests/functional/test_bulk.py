"""Bulk mode: many volumes into (and out of) one guest in one call.

``hvplug attach`` / ``detach`` with ``--connection-info`` repeated (or
``detach --dev`` repeated), and the Python API behind them,
:func:`hvplug.virt.bulk.attach_volumes` / :func:`detach_volumes`, against
real tgtd targets with CHAP and a real QEMU guest.  One volume's failure is
its own; a malformed document stops the whole call before anything changes.
"""

import copy
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from hvplug.virt import bulk
from hvplug.virt.volume.registry import VolumeDriverRegistry
from tests.functional.helpers import (
    CLI_TIMEOUT,
    attach,
    disk_element,
    domblklist,
    run_cli,
    sessions,
    usage_secret,
    wait_for,
)

OUTCOME_KEYS = {"volume", "ok", "result", "error"}
DRIVER = "hvplug.virt.volume.net.LibvirtNetVolumeDriver"


def info_files(tmp_path, infos, prefix: str = "ci") -> list[str]:
    """Each connection_info in its own 0600 file; the ``--connection-info`` args."""
    args = []
    for index, info in enumerate(infos, 1):
        path = tmp_path / f"{prefix}-{index}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        args += ["--connection-info", str(path)]
    return args


def disk_secret_uuid(host, domain: str, dev: str) -> str:
    return disk_element(host.domain_xml(domain), dev).find("source/auth/secret").get("uuid")


def assert_attached(host, domain: str, volumes, results: list[dict]) -> None:
    """Each volume is a disk of ``domain`` with its own, existing secret."""
    devs = [r["dev"] for r in results]
    assert len(set(devs)) == len(volumes), devs
    assert domblklist(domain) == {dev: v.usage_id for dev, v in zip(devs, volumes, strict=True)}
    for volume, result in zip(volumes, results, strict=True):
        assert (result["domain"], result["bus"], result["driver"]) == (domain, "scsi", DRIVER)
        secret = usage_secret(host, volume.usage_id)
        assert secret is not None, volume.usage_id
        assert secret.UUIDString() == result["secret_uuid"]
        assert disk_secret_uuid(host, domain, result["dev"]) == result["secret_uuid"]
    assert wait_for(lambda: all(sessions(v.tid) for v in volumes))


def assert_gone(host, domain: str, volumes) -> None:
    """No disk in ``domain`` and no secret for any of ``volumes``."""
    assert domblklist(domain) == {}
    assert [v.usage_id for v in volumes if usage_secret(host, v.usage_id)] == []
    assert wait_for(lambda: not any(sessions(v.tid) for v in volumes))


def bulk_json(*args: str) -> tuple[int, dict, str]:
    rc, out, err = run_cli(*args, "--json")
    assert "Traceback" not in err, err
    return rc, json.loads(out), err


def test_attach_and_detach_six_volumes(host, make_guest, make_volume, tmp_path):
    domain = make_guest()
    volumes = [make_volume(size_mib=16) for _ in range(6)]
    files = info_files(tmp_path, volumes)

    rc, report, err = bulk_json("attach", "--domain", domain, "--bus", "scsi", *files)
    assert rc == 0, (report, err)
    assert set(report) == {"domain", "ok", "volumes"}
    assert (report["domain"], report["ok"]) == (domain, True)
    outcomes = report["volumes"]
    assert [o["volume"] for o in outcomes] == [v["serial"] for v in volumes]  # input order
    for outcome in outcomes:
        assert set(outcome) == OUTCOME_KEYS
        assert (outcome["ok"], outcome["error"]) == (True, None), outcome
    assert_attached(host, domain, volumes, [o["result"] for o in outcomes])
    devs = [o["result"]["dev"] for o in outcomes]
    assert sorted(devs) == ["sda", "sdb", "sdc", "sdd", "sde", "sdf"]

    rc, report, err = bulk_json("detach", "--domain", domain, *files)
    assert rc == 0, (report, err)
    assert (report["domain"], report["ok"]) == (domain, True)
    assert [(o["volume"], o["ok"], o["result"]["dev"]) for o in report["volumes"]] == [
        (v["serial"], True, dev) for v, dev in zip(volumes, devs, strict=True)]
    assert_gone(host, domain, volumes)


def test_one_wrong_password_fails_alone(host, make_guest, make_volume, tmp_path):
    domain = make_guest()
    volumes = [make_volume(size_mib=16) for _ in range(5)]
    bad = copy.deepcopy(dict(volumes[2]))
    bad["data"]["auth_password"] = "wrong-" + volumes[2].password
    infos = [*volumes[:2], bad, *volumes[3:]]

    rc, report, err = bulk_json("attach", "--domain", domain, "--bus", "scsi",
                                *info_files(tmp_path, infos))
    assert rc == 1, (report, err)
    assert (report["domain"], report["ok"]) == (domain, False)
    outcomes = report["volumes"]
    assert [(o["volume"], o["ok"]) for o in outcomes] == [
        (v["serial"], v is not volumes[2]) for v in volumes]
    failed = outcomes[2]
    assert failed["result"] is None
    assert failed["error"]["type"] == "AuthenticationFailed"
    assert failed["error"]["exit_code"] == 1
    assert f"rejected user '{volumes[2].username}'" in failed["error"]["message"]
    assert volumes[2].usage_id in failed["error"]["message"]
    assert (f"hvplug: error: {volumes[2]['serial']}: CHAP authentication failed"
            in err), err
    assert bad["data"]["auth_password"] not in json.dumps(report) + err

    good = [v for v in volumes if v is not volumes[2]]
    assert_attached(host, domain, good, [o["result"] for o in outcomes if o["ok"]])
    # The failed volume left nothing: no disk, no secret, no session.
    assert volumes[2].usage_id not in domblklist(domain).values()
    assert usage_secret(host, volumes[2].usage_id) is None
    assert wait_for(lambda: not sessions(volumes[2].tid))

    rc, report, err = bulk_json("detach", "--domain", domain,
                                *info_files(tmp_path, good, prefix="good"))
    assert rc == 0 and report["ok"], (report, err)
    assert_gone(host, domain, volumes)


def _no_driver_type(info):
    del info["driver_volume_type"]


def _data_not_object(info):
    info["data"] = ["not", "an", "object"]


def _unknown_driver(info):
    info["driver_volume_type"] = "no-such-transport"


def _no_target_iqn(info):
    del info["data"]["target_iqn"]


@pytest.mark.parametrize(("spoil", "type_", "says"), [
    (_no_driver_type, "InvalidConnectionInfo", "driver_volume_type is missing"),
    (_data_not_object, "InvalidConnectionInfo", "connection_info.data must be an object"),
    (_unknown_driver, "VolumeDriverNotFound", "'no-such-transport'"),
    (_no_target_iqn, "InvalidConnectionInfo", "target_iqn"),
], ids=["no-driver-type", "data-not-object", "unknown-driver", "no-target-iqn"])
def test_one_malformed_document_changes_nothing(host, make_guest, make_volume, tmp_path,
                                                spoil, type_, says):
    domain = make_guest()
    volumes = [make_volume(size_mib=16) for _ in range(4)]
    broken = copy.deepcopy(dict(volumes[2]))
    spoil(broken)
    infos = [*volumes[:2], broken, volumes[3]]
    try:
        rc, report, err = bulk_json("attach", "--domain", domain, "--bus", "scsi",
                                    *info_files(tmp_path, infos))
        assert rc == 2, (report, err)
        error = report["error"]
        assert (error["type"], error["exit_code"]) == (type_, 2)
        assert error["message"].startswith("connection_info #3: "), error
        assert says in error["message"], error
        assert f"hvplug: error: {error['message']}\n" in err
        assert_gone(host, domain, volumes)
    finally:
        for dev in domblklist(domain):  # only if the assertions above failed
            run_cli("detach", "--domain", domain, "--dev", dev)


def test_python_api_four_volumes(host, make_guest, make_volume):
    domain = make_guest()
    volumes = [make_volume(size_mib=16) for _ in range(4)]
    registry = VolumeDriverRegistry(host)

    outcomes = bulk.attach_volumes(host, registry, domain,
                                   [copy.deepcopy(dict(v)) for v in volumes], bus="scsi")
    assert [(o.volume, o.ok, o.error) for o in outcomes] == [
        (v["serial"], True, None) for v in volumes]
    assert_attached(host, domain, volumes, [o.result for o in outcomes])

    outcomes = bulk.detach_volumes(host, registry, domain,
                                   infos=[copy.deepcopy(dict(v)) for v in volumes])
    assert [(o.volume, o.ok, o.error) for o in outcomes] == [
        (v["serial"], True, None) for v in volumes]
    assert_gone(host, domain, volumes)


def test_detach_by_repeated_dev(host, make_guest, make_volume):
    domain, volumes = make_guest(), [make_volume(size_mib=16) for _ in range(2)]
    results = [attach(domain, v) for v in volumes]
    assert [r["dev"] for r in results] == ["sda", "sdb"]
    assert_attached(host, domain, volumes, results)

    rc, report, err = bulk_json("detach", "--domain", domain, "--dev", "sda", "--dev", "sdb")
    assert rc == 0, (report, err)
    assert (report["domain"], report["ok"]) == (domain, True)
    assert [(o["volume"], o["ok"], o["result"]["dev"], o["error"])
            for o in report["volumes"]] == [("sda", True, "sda", None),
                                            ("sdb", True, "sdb", None)]
    assert_gone(host, domain, volumes)


# The DEBUG log without --debug (which would print the interrupt's traceback).
DEBUG_LOG_CLI = [sys.executable, "-c", (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.DEBUG, "
    "format='%(levelname)s %(name)s: %(message)s')\n"
    "from hvplug.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n")]


def test_sigterm_undoes_a_bulk_attach(host, make_guest, make_volume, tmp_path):
    """Interrupted after the first volume is in: the domain is left as it was found."""
    domain = make_guest()
    volumes = [make_volume(size_mib=16) for _ in range(6)]
    proc = subprocess.Popen([*DEBUG_LOG_CLI, "attach", "--domain", domain, "--bus", "scsi",
                             "--json", *info_files(tmp_path, volumes)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(CLI_TIMEOUT, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if " attached to " in line:
                proc.send_signal(signal.SIGTERM)
                break
        lines.append(proc.stderr.read())
        out, rc = proc.stdout.read(), proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    err = "".join(lines)
    assert rc != -signal.SIGKILL, f"hung; killed by the watchdog:\n{err}"
    assert "Traceback" not in err, err
    if rc in (0, -signal.SIGTERM):  # it had finished before the signal: nothing undone
        assert sorted(domblklist(domain).values()) == sorted(v.usage_id for v in volumes)
        assert all(usage_secret(host, v.usage_id) for v in volumes)
        pytest.skip("the bulk attach finished before SIGTERM arrived")
    assert rc == 1, (rc, out, err)
    assert json.loads(out)["error"]["type"] == "Interrupted", out
    assert "hvplug: error: Interrupted by SIGTERM; " in err, err
    assert_gone(host, domain, volumes)
