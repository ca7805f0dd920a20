"""Attaches the real stack refuses, and that they leave nothing behind.

Each refusal must reach the user as one line naming the cause (no
traceback), with the documented exit code, and leave no secret, no disk and
no iSCSI session.
"""

import copy
import json
import os
import uuid

from tests.functional.helpers import (
    attach,
    dead_port,
    detach,
    domblklist,
    host_initiator,
    run_cli,
    sessions,
    usage_secret,
)


def assert_nothing_left(host, domain, volume) -> None:
    """No secret for the volume, no disk on ``domain``, no session on its target."""
    assert usage_secret(host, volume.usage_id) is None
    if domain:
        assert domblklist(domain) == {}
        assert volume.usage_id not in host.domain_xml(domain)
    assert sessions(volume.tid) == []


def refused(domain: str, info, *extra: str) -> tuple[int, str]:
    """Attach that must fail; ``(rc, stderr)``, with no traceback and no JSON noise."""
    rc, out, err = run_cli("attach", "--domain", domain, "--bus", "scsi", *extra, info=info)
    assert rc != 0, out
    assert "Traceback" not in err and "Traceback" not in out, err
    assert err.startswith("hvplug: error: "), err
    return rc, err


def test_wrong_chap_password(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    wrong = copy.deepcopy(volume)
    wrong["data"]["auth_password"] = "not-" + volume.password
    rc, err = refused(domain, wrong)
    assert rc == 1
    assert "authentication" in err.lower()
    assert volume.username in err and volume.iqn in err
    assert volume.password not in err and wrong["data"]["auth_password"] not in err
    assert_nothing_left(host, domain, volume)

    # The same volume with the right password attaches afterwards.
    attach(domain, volume)
    detach(domain, volume)
    assert_nothing_left(host, domain, volume)


def test_initiator_acl(host, make_guest, make_volume, tmp_path):
    domain = make_guest()
    volume = make_volume(acl_initiator=host_initiator())

    # The target admits this host's IQN, which QEMU presents by default.
    result = attach(domain, volume)
    assert [s.initiator for s in sessions(volume.tid)] == [host_initiator()]
    detach(domain, volume)
    assert_nothing_left(host, domain, volume)

    other = f"iqn.2024-01.org.hvplug.test:not-granted-{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "hvplug.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"[libvirt]\niscsi_initiator_name = {other}\n")
    rc, err = refused(domain, volume, "--config-file", str(conf))
    assert rc == 1
    # tgtd refuses an initiator outside the ACL with the login status
    # "Target not found" (a hidden target), not "Authorization failure", so
    # hvplug names both causes (exception.TargetNotFound).
    assert f"to initiator {other}" in err and "initiator ACL" in err, err
    assert volume.iqn in err
    assert_nothing_left(host, domain, volume)
    assert not host.secret_exists(result["secret_uuid"])


def test_target_not_exported(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    info = copy.deepcopy(volume)
    missing = volume.iqn + "-missing"
    info["data"]["target_iqn"] = missing
    rc, err = refused(domain, info)
    assert rc == 1
    assert f"Target {missing}/1 at 127.0.0.1:3260" in err and "Target not found" in err
    assert usage_secret(host, f"{missing}/1") is None
    assert_nothing_left(host, domain, volume)


def test_unreachable_target(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    dead = [f"127.0.0.1:{dead_port()}", f"127.0.0.1:{dead_port()}"]
    info = copy.deepcopy(volume)
    info["data"].update(target_portal=dead[0], target_portals=dead,
                        target_iqns=[volume.iqn] * 2, target_luns=[1, 1])
    rc, err = refused(domain, info)
    assert rc == 1
    assert "unreachable" in err and dead[0] in err and dead[1] in err, err
    assert_nothing_left(host, domain, volume)


def test_domain_missing(host, make_volume):
    volume = make_volume()
    missing = f"hvplug-test-missing-{uuid.uuid4().hex[:8]}"
    rc, err = refused(missing, volume)
    assert rc == 1
    assert "not found" in err and missing in err, err
    assert_nothing_left(host, None, volume)
    rc, _, err = run_cli("detach", "--domain", missing, "--dev", "sda")
    assert rc == 1 and "not found" in err and "Traceback" not in err, err


def test_malformed_json(make_guest):
    domain = make_guest()
    rc, out, err = run_cli("attach", "--domain", domain, "--connection-info", "-",
                           stdin='{"driver_volume_type": "iscsi", "data": {')
    assert rc == 2, (out, err)
    assert "malformed JSON" in err and "Traceback" not in err, err
    rc, out, err = run_cli("attach", "--domain", domain, "--connection-info", "-",
                           "--json", stdin="not json at all")
    assert rc == 2, (out, err)
    assert json.loads(out)["error"]["exit_code"] == 2
    assert "Traceback" not in err


def test_missing_keys(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    cases = {
        "driver_volume_type": lambda info: info.pop("driver_volume_type"),
        "data": lambda info: info.pop("data"),
        "data.target_iqn": lambda info: info["data"].pop("target_iqn"),
        "data.target_portal": lambda info: info["data"].pop("target_portal"),
        "data.target_lun": lambda info: info["data"].pop("target_lun"),
        "data.auth_password": lambda info: info["data"].pop("auth_password"),
    }
    for key, damage in cases.items():
        info = copy.deepcopy(volume)
        damage(info)
        rc, err = refused(domain, info)
        assert rc == 2, (key, err)
        assert "Invalid connection_info" in err and key in err, (key, err)
    rc, _, err = run_cli("detach", "--domain", domain, "--connection-info", "-",
                         stdin="{}")
    assert rc == 2 and "driver_volume_type" in err and "Traceback" not in err, err
    assert_nothing_left(host, domain, volume)
