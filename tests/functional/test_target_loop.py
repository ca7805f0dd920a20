"""The whole loop through the CLI: export with tgt → attach → write → detach → remove.

`hvplug target create-export` exports a sparse file from the real tgtd with
CHAP and prints connection_info; `hvplug attach` feeds it to a real guest,
QEMU writes through its own iSCSI session, and the bytes land in the file.
"""

import json
import subprocess

import pytest

from hvplug.target.tgtd_ipc import TgtdIPC
from tests import stack
from tests.functional.conftest import unique_hex
from tests.functional.helpers import (
    CLI,
    attach,
    detach,
    disk_alias,
    domblklist,
    qemu_io,
    sessions,
    wait_for,
)


@pytest.fixture
def target_cli(tmp_path):
    """Run ``hvplug target ...`` with exports and stanzas under tmp_path."""
    stack.require_tgtd()
    conf = tmp_path / "hvplug.conf"
    conf.write_text(f"[target]\nexports_dir = {tmp_path}/exports\n"
                    f"volumes_dir = {tmp_path}/volumes\niscsi_ip_address = 127.0.0.1\n"
                    f"backing_roots = {tmp_path}\n")
    conf.chmod(0o600)
    created = []

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        if args[0] == "create-export":
            created.append(args[args.index("--volume-id") + 1])
        result = subprocess.run([*CLI, "--config-file", str(conf), "target", *args],
                                capture_output=True, text=True, timeout=120, check=False)
        assert not check or result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        return result
    yield run
    for volume_id in created:  # whatever the test left: remove it
        run("remove-export", "--volume-id", volume_id, check=False)


def tgtd_target(iqn: str):
    for tid, target in TgtdIPC().list_targets().items():
        if target.iqn == iqn:
            return tid, target
    return None, None


def test_export_attach_write_detach_remove(host, make_guest, target_cli, tmp_path):
    volume_id = f"hvplug-test-{unique_hex()}"
    backing = tmp_path / "volume.img"
    created = target_cli("create-export", "--volume-id", volume_id, "--path", str(backing),
                         "--size", "32M")
    info = json.loads(created.stdout)
    assert info["driver_volume_type"] == "iscsi"
    assert backing.stat().st_size == 32 << 20
    tid, target = tgtd_target(info["data"]["target_iqn"])
    assert target is not None and 1 in target.luns
    assert target.accounts == [info["data"]["auth_username"]]

    domain = make_guest()
    dev = attach(domain, info)["dev"]
    assert domblklist(domain) == {dev: f"{info['data']['target_iqn']}/1"}
    assert wait_for(lambda: sessions(tid))
    qdev = disk_alias(host.domain_xml(domain), dev)
    report = qemu_io(domain, qdev, "write -P 0xa7 1048576 65536")
    assert "wrote 65536/65536 bytes at offset 1048576" in report, report
    qemu_io(domain, qdev, "flush", report=False)
    with open(backing, "rb") as f:
        f.seek(1048576)
        assert f.read(65536) == b"\xa7" * 65536

    detach(domain, info)
    assert wait_for(lambda: not sessions(tid))
    shown = json.loads(target_cli("show", "--volume-id", volume_id, "--json").stdout)
    assert shown["auth_password"] == "***"
    assert info["data"]["auth_password"] not in target_cli("list").stdout
    target_cli("remove-export", "--volume-id", volume_id)
    assert tgtd_target(info["data"]["target_iqn"]) == (None, None)
    assert list((tmp_path / "volumes").glob("*.conf")) == []  # no stanza left


def test_enable_iser_fails_clearly_and_persists_nothing(target_cli, tmp_path):
    volume_id = f"hvplug-test-{unique_hex()}"
    conf = tmp_path / "hvplug.conf"
    conf.write_text(conf.read_text() + "enable_iser = true\n")
    result = target_cli("create-export", "--volume-id", volume_id, "--path",
                        str(tmp_path / "v.img"), "--size", "8M", check=False)
    assert result.returncode == 1
    assert "iSER/RDMA is unavailable on this target host" in result.stderr
    iqn = f"iqn.2010-10.org.openstack:volume-{volume_id}"
    assert tgtd_target(iqn) == (None, None)
    assert not list((tmp_path / "volumes").glob("*.conf"))
    assert not (tmp_path / "exports" / f"{volume_id}.json").exists()
