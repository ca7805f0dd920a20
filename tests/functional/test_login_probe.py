"""The iSCSI login probe against real tgtd, a silent portal through the real CLI,
and ``verify`` of a target that was deleted.

The silent portal is a TCP server of this test on 127.0.0.1 (port 0): it
accepts and never answers, which is what kept QEMU's blockdev-add, and with
it libvirt's lock on the domain, waiting for minutes before the probe.
"""

import contextlib
import copy
import os
import socket
import threading

import pytest

from hvplug.initiator import login_probe
from hvplug.initiator.login_probe import Outcome
from hvplug.target.tgtd_ipc import TgtdIPC
from tests.functional.helpers import (
    attach,
    detach,
    domblklist,
    host_initiator,
    run_cli,
    run_json,
    sessions,
    usage_secret,
    wait_for,
)

PROBE_TIMEOUT = 1.0


def probe(volume, initiator=None, **kwargs):
    return login_probe.probe("127.0.0.1", 3260, volume.iqn, initiator or host_initiator(),
                             connect_timeout=5.0, login_timeout=10.0, **kwargs)


def no_sessions(volume) -> bool:
    return wait_for(lambda: sessions(volume.tid) == [], timeout=15)


def test_probe_answers_of_real_tgtd(make_volume):
    plain, chap = make_volume(chap=False), make_volume()
    result = probe(plain, report_luns=True)
    assert result.outcome is Outcome.ADMITTED and 1 in result.luns, result
    assert probe(plain).outcome is Outcome.ADMITTED  # login phase only, then closed
    result = probe(chap, report_luns=True)
    assert (result.outcome, result.auth_method, result.luns) == (Outcome.AUTH_REQUIRED,
                                                                 "CHAP", None)
    assert probe(chap, offer_chap=False).outcome is Outcome.AUTHENTICATION_FAILED
    missing = copy.copy(plain)
    missing.iqn = plain.iqn + "-missing"
    assert probe(missing).outcome is Outcome.NOT_FOUND
    # tgtd keeps no session of any probe, not even of the full login.
    assert no_sessions(plain) and no_sessions(chap)


def test_probe_of_an_initiator_the_acl_refuses(make_volume):
    volume = make_volume(chap=False, acl_initiator=host_initiator())
    assert probe(volume).outcome is Outcome.ADMITTED
    other = f"iqn.2024-01.org.hvplug.test:not-granted-{os.urandom(4).hex()}"
    # tgtd answers an initiator its ACL refuses with "Target not found".
    assert probe(volume, initiator=other).outcome is Outcome.NOT_FOUND
    assert no_sessions(volume)


@pytest.fixture
def silent_portal():
    """A 127.0.0.1 portal that accepts TCP connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)
    server.close()
    for conn in accepted:
        conn.close()
    thread.join(5)


@pytest.fixture
def short_probe_config(tmp_path):
    conf = tmp_path / "hvplug-probe.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"[libvirt]\niscsi_login_probe_timeout = {PROBE_TIMEOUT}\n")
    return str(conf)


def test_a_silent_portal_fails_the_attach_and_leaves_the_domain_usable(
        host, make_guest, make_volume, silent_portal, short_probe_config):
    domain, volume = make_guest(), make_volume()
    portal, accepted = silent_portal
    info = copy.deepcopy(volume)
    info["data"]["target_portal"] = portal
    rc, out, err = run_cli("attach", "--domain", domain, "--bus", "scsi",
                           "--config-file", short_probe_config, info=info)
    assert rc == 1, (out, err)
    assert "Traceback" not in err and err.startswith("hvplug: error: "), err
    assert f"portal {portal} accepted a TCP connection" in err, err
    assert volume.iqn in err and "iscsi_login_probe_timeout" in err, err
    assert f"within {PROBE_TIMEOUT} s" in err, err
    assert volume.password not in err + out
    assert accepted  # the probe did reach the silent server
    assert usage_secret(host, volume.usage_id) is None

    # The domain is not blocked: virsh and another attach work right away.
    assert domblklist(domain) == {}
    result = attach(domain, volume, "--config-file", short_probe_config)
    assert result["portal"] == "127.0.0.1:3260"
    detach(domain, volume)
    assert domblklist(domain) == {}


def test_a_silent_first_portal_falls_through(host, make_guest, make_volume, silent_portal,
                                             short_probe_config):
    domain, volume = make_guest(), make_volume()
    portal, _ = silent_portal
    info = copy.deepcopy(volume)
    info["data"].update(target_portal=portal, target_portals=[portal, "127.0.0.1:3260"])
    result = attach(domain, info, "--config-file", short_probe_config)
    assert result["portal"] == "127.0.0.1:3260"
    detach(domain, info)


def checks_by_dev(report: dict) -> dict:
    return {disk["dev"]: {c["check"]: c for c in disk["checks"]} for disk in report["disks"]}


def test_verify_checks_target_and_lun_and_fails_for_a_deleted_target(host, make_guest,
                                                                      make_volume):
    domain = make_guest()
    plain, chap = make_volume(chap=False), make_volume()
    plain_dev = attach(domain, plain)["dev"]
    chap_dev = attach(domain, chap)["dev"]
    report = run_json("verify", "--domain", domain)
    assert report["ok"] is True, report
    found = checks_by_dev(report)
    assert list(found[plain_dev]) == ["portal", "target", "lun"]
    assert found[plain_dev]["lun"]["detail"] == "LUN 1 exists (REPORT LUNS)"
    assert list(found[chap_dev]) == ["secret", "portal", "target"]
    assert "CHAP required; LUN 1 not checked" in found[chap_dev]["target"]["detail"]

    ipc = TgtdIPC()
    ipc.delete_target(chap.tid, force=True)
    try:
        rc, out, err = run_cli("verify", "--domain", domain)
        assert rc == 1, (out, err)
        failed = [line for line in out.splitlines() if line.endswith("[FAILED]")]
        assert len(failed) == 1 and failed[0].startswith(f"{chap_dev}: target {chap.iqn}")
        assert "Target not found" in failed[0]
        assert "verification of domain" in err and chap.iqn in err
        assert chap.password not in out + err
    finally:  # the fixture deletes the target at its tid: make it ours again
        ipc.new_target(chap.tid, chap.iqn)
