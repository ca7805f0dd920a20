"""A volume's secret through a domain's life: managed save, external
snapshots, block copies, restarts, promotion to the persistent config, and
a secret lost behind hvplug's back."""

import contextlib
import copy
import json
import shutil
from pathlib import Path

import pytest
from lxml import etree

from hvplug.virt.config import LibvirtConfigDeviceXML as DeviceXML
from tests.functional.conftest import unique_hex
from tests.functional.helpers import (
    attach,
    detach,
    disk_element,
    domblklist,
    run_cli,
    run_json,
    usage_secret,
    virsh,
)
from tests.functional.test_secret_ownership import (
    operator_disk_xml,
    secret_xml,
    stored_value,
)

# QEMU runs as an unprivileged user that cannot enter pytest's 0700 tmp_path.
QEMU_IMAGES = Path("/var/lib/libvirt/images")


@pytest.fixture
def qemu_dir():
    """A directory of our own that QEMU can create and open files in."""
    path = QEMU_IMAGES / f"hvplug-test-{unique_hex()}"
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def disk_string(domain_xml: str, dev: str) -> str:
    disk = disk_element(domain_xml, dev)
    assert disk is not None, f"no disk {dev}"
    return etree.tostring(disk, encoding="unicode")


def reconcile(domain: str, *extra: str, info=None) -> tuple[int, dict, str]:
    """``hvplug reconcile --domain DOMAIN --json``: rc, parsed output, stderr.

    ``--domain`` keeps the search for missing secrets to our own domain:
    other runs share this host.  Orphans are looked for host-wide.
    """
    rc, out, err = run_cli("reconcile", "--domain", domain, "--json", *extra, info=info)
    assert "Traceback" not in err, err
    return rc, json.loads(out), err


def ours(report: dict, volume) -> list[tuple[str, str]]:
    """``(kind, action)`` of the findings about ``volume``'s secret.

    Matched by usage (``source``): the JSON masks the ``secret`` field, see
    test_reconcile_json_names_the_secret.
    """
    return [(f["kind"], f["action"]) for f in report["findings"]
            if f["source"] == volume.usage_id]


def restart(domain: str) -> None:
    virsh("destroy", domain)
    virsh("start", domain)


def test_managed_save_blocks_changes(host, make_guest, make_volume):
    domain, volume, other = make_guest(persistent=True), make_volume(), make_volume()
    result = attach(domain, volume, "--persistent")
    dev, uuid = result["dev"], result["secret_uuid"]
    try:
        virsh("managedsave", domain)
        assert host.domain_info(domain).managed_save
        config, saved = host.domain_xml(domain, inactive=True), host.managed_save_xml(domain)

        rc, out, err = run_cli("detach", "--domain", domain, info=volume)
        assert rc == 1, (out, err)
        assert "managed save image" in err
        assert f"virsh start {domain}" in err and f"managedsave-remove {domain}" in err
        assert host.secret_exists(uuid)
        assert domblklist(domain, inactive=True) == {dev: volume.usage_id}
        assert host.managed_save_xml(domain) == saved

        rc, out, err = run_cli("attach", "--domain", domain, "--bus", "scsi",
                               "--persistent", info=other)
        assert rc == 1, (out, err)
        assert "managed save image" in err
        assert usage_secret(host, other.usage_id) is None
        assert host.domain_xml(domain, inactive=True) == config
        assert host.managed_save_xml(domain) == saved

        virsh("start", domain)
        assert not host.domain_info(domain).managed_save
        assert domblklist(domain) == {dev: volume.usage_id}
        assert host.secret_exists(uuid)
        detach(domain, volume)
        assert not host.secret_exists(uuid)
    finally:
        with contextlib.suppress(host.libvirt.libvirtError):
            dom = host.connection().lookupByName(domain)
            if dom.hasManagedSaveImage(0):
                dom.managedSaveRemove(0)


def test_external_snapshot_moves_the_volume_down(host, make_guest, make_volume, qemu_dir):
    domain, volume = make_guest(), make_volume()
    result = attach(domain, volume)
    dev, uuid = result["dev"], result["secret_uuid"]
    overlay = qemu_dir / "overlay.qcow2"
    try:
        virsh("snapshot-create-as", domain, "snap", "--disk-only", "--no-metadata",
              "--diskspec", f"{dev},file={overlay}")
        assert domblklist(domain) == {dev: str(overlay)}

        rows = run_json("list", "--domain", domain)["volumes"]
        assert [(r["dev"], r["layer"], r["source"], r["secret_uuid"]) for r in rows] == [
            (dev, "backing 1", volume.usage_id, uuid)]
        verified = run_json("verify", "--domain", domain)
        assert verified["ok"]
        [disk] = verified["disks"]
        assert disk["layer"] == "backing 1"
        assert {c["check"] for c in disk["checks"] if c["ok"]} == {"secret", "portal",
                                                                  "target"}

        rc, out, err = run_cli("attach", "--domain", domain, "--bus", "scsi", info=volume)
        assert rc == 1, (out, err)
        assert "backing layer 1" in err and "blockcommit" in err
        assert domblklist(domain) == {dev: str(overlay)}
        assert host.secret_exists(uuid)

        detached = detach(domain, volume)
        assert detached["dev"] == dev and "backing layer 1" in detached["layer"]
        assert domblklist(domain) == {}
        assert not host.secret_exists(uuid)
        assert usage_secret(host, volume.usage_id) is None
    finally:
        overlay.unlink(missing_ok=True)


def test_blockcopy_leaves_an_orphan_for_reconcile(host, make_guest, make_volume, qemu_dir):
    domain, volume = make_guest(), make_volume()
    result = attach(domain, volume)
    dev, uuid = result["dev"], result["secret_uuid"]
    copy_file = qemu_dir / "copy.raw"
    try:
        virsh("blockcopy", domain, dev, str(copy_file), "--format", "raw", "--wait",
              "--pivot", "--transient-job")
        assert domblklist(domain) == {dev: str(copy_file)}
        assert volume.usage_id not in host.domain_xml(domain)
        assert host.secret_exists(uuid)

        rc, report, err = reconcile(domain, "--dry-run")
        assert rc == 1, err
        assert ours(report, volume) == [("orphan-secret", "would remove")]
        assert host.secret_exists(uuid)

        rc, report, err = reconcile(domain)
        assert rc == 0, err
        assert ours(report, volume) == [("orphan-secret", "removed")]
        assert not host.secret_exists(uuid)

        rc, report, err = reconcile(domain)
        assert rc == 0, err
        assert ours(report, volume) == []
        assert domblklist(domain) == {dev: str(copy_file)}
    finally:
        copy_file.unlink(missing_ok=True)


def test_live_only_attach_does_not_survive_a_restart(host, make_guest, make_volume):
    domain, volume = make_guest(persistent=True), make_volume()
    result = attach(domain, volume)
    dev, uuid = result["dev"], result["secret_uuid"]
    assert domblklist(domain) == {dev: volume.usage_id}
    assert domblklist(domain, inactive=True) == {}

    restart(domain)
    assert domblklist(domain) == {}
    assert host.secret_exists(uuid)
    rc, report, err = reconcile(domain)
    assert rc == 0, err
    assert ours(report, volume) == [("orphan-secret", "removed")]
    assert not host.secret_exists(uuid)


def test_promote_live_attach_to_persistent(host, make_guest, make_volume):
    domain, volume = make_guest(persistent=True), make_volume()
    result = attach(domain, volume)
    dev, uuid = result["dev"], result["secret_uuid"]
    live_disk = disk_string(host.domain_xml(domain), dev)

    promoted = attach(domain, volume, "--persistent")
    assert promoted["promoted"] is True
    assert (promoted["dev"], promoted["secret_uuid"]) == (dev, uuid)
    assert (promoted["live"], promoted["persistent"]) == (True, True)
    assert domblklist(domain, inactive=True) == {dev: volume.usage_id}
    assert disk_string(host.domain_xml(domain), dev) == live_disk
    config_disk = disk_element(host.domain_xml(domain, inactive=True), dev)
    assert config_disk.find(".//auth/secret").get("uuid") == uuid
    assert config_disk.find("alias") is None

    restart(domain)
    assert domblklist(domain) == {dev: volume.usage_id}
    assert host.secret_exists(uuid)
    detached = detach(domain, volume)
    assert (detached["live"], detached["persistent"]) == (True, True)
    assert domblklist(domain) == {} and domblklist(domain, inactive=True) == {}
    assert not host.secret_exists(uuid)


def test_missing_secret_is_found_and_recreated(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    result = attach(domain, volume)
    dev, uuid = result["dev"], result["secret_uuid"]
    host.secret_by_uuid(uuid).undefine()

    rc, out, err = run_cli("verify", "--domain", domain)
    assert rc == 1, (out, err)
    assert f"secret {uuid} is missing" in err

    rc, report, err = reconcile(domain)
    assert rc == 1, err
    [finding] = [f for f in report["findings"] if f["source"] == volume.usage_id]
    assert (finding["kind"], finding["domain"], finding["dev"], finding["action"]) == (
        "missing-secret", domain, dev, "not repaired")
    assert not host.secret_exists(uuid)

    wrong = copy.deepcopy(volume)
    wrong["data"]["auth_password"] = "not-" + volume.password
    rc, report, err = reconcile(domain, info=wrong)
    assert rc == 1, err
    assert "CHAP authentication failed" in err
    assert not host.secret_exists(uuid)
    assert usage_secret(host, volume.usage_id) is None

    rc, report, err = reconcile(domain, info=volume)
    assert rc == 0, err
    assert ours(report, volume) == [("missing-secret", f"re-created as {uuid}")]
    disk = disk_element(host.domain_xml(domain), dev)
    assert disk.find(".//auth/secret").get("uuid") == uuid
    root = etree.fromstring(host.secret_by_uuid(uuid).XMLDesc(0).encode())
    assert root.findtext("description").startswith("hvplug-owned:")
    assert (root.get("private"), root.findtext("usage/target")) == ("yes", volume.usage_id)
    assert stored_value(uuid) == volume.password.encode()
    assert run_json("verify", "--domain", domain)["ok"]

    detach(domain, volume)
    assert domblklist(domain) == {}
    assert not host.secret_exists(uuid)


def test_verify_checks_a_secret_referenced_by_usage(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    secret = host.define_secret_xml(secret_xml(volume.usage_id))
    try:
        secret.setValue(volume.password.encode())
        host.attach_device(domain, DeviceXML(operator_disk_xml(volume)))
        assert domblklist(domain) == {"sda": volume.usage_id}
        assert run_json("verify", "--domain", domain)["ok"]
    finally:
        host.delete_secret(secret.UUIDString())
    assert usage_secret(host, volume.usage_id) is None

    rc, out, err = run_cli("verify", "--domain", domain)
    assert rc == 1, (out, err)
    assert f"secret with usage iscsi '{volume.usage_id}' is missing" in err


def test_reconcile_json_names_the_secret(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    uuid = attach(domain, volume)["secret_uuid"]
    virsh("destroy", domain)  # transient: the domain and its disk are gone
    rc, out, _ = run_cli("reconcile", "--dry-run")
    assert rc == 1 and uuid in out, "the text output names it"
    rc, out, _ = run_cli("reconcile", "--dry-run", "--json")
    assert rc == 1, out
    findings = [f for f in json.loads(out)["findings"] if f["source"] == volume.usage_id]
    assert [(f["secret_uuid"], f["secret_usage"]) for f in findings] == [
        (uuid, volume.usage_id)]
