"""``hvplug attach`` / ``detach`` / ``list`` / ``verify`` against the real stack.

A real diskless QEMU guest (libvirtd, qemu:///system) gets a real tgtd LUN
over QEMU's built-in iSCSI initiator with CHAP.  Facts are checked where
they live: virsh, tgtd's session list, libvirt's secret store, the backing
file.
"""

import pytest

from hvplug.virt.volume.net import LibvirtNetVolumeDriver
from tests.functional.helpers import (
    attach,
    detach,
    disk_alias,
    domblklist,
    host_initiator,
    qemu_io,
    run_cli,
    run_json,
    sessions,
    usage_secret,
    virsh,
    wait_for,
)

ATTACH_KEYS = {"domain", "dev", "bus", "driver", "secret_uuid", "portal", "live",
               "persistent", "promoted"}


def test_attach_detach_with_chap(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    result = attach(domain, volume)

    assert set(result) == ATTACH_KEYS
    dev = result["dev"]
    assert result["domain"] == domain
    assert (dev, result["bus"], result["portal"]) == ("sda", "scsi", "127.0.0.1:3260")
    assert result["driver"] == "hvplug.virt.volume.net.LibvirtNetVolumeDriver"
    assert domblklist(domain) == {dev: volume.usage_id}

    # QEMU itself logged in, with this host's IQN from <initiator><iqn>.
    nexus = wait_for(lambda: sessions(volume.tid))
    assert [s.initiator for s in nexus] == [host_initiator()]
    assert "127.0.0.1" in nexus[0].addresses

    assert host.block_capacity(domain, dev) == volume.size
    assert f"Capacity:       {volume.size}\n" in virsh("domblkinfo", domain, dev)

    # The CHAP secret: private, persistent, usage iscsi keyed <iqn>/<lun>.
    secret = usage_secret(host, volume.usage_id)
    assert secret is not None
    assert secret.UUIDString() == result["secret_uuid"]
    assert (secret.usageType(), secret.usageID()) == (
        host.libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, volume.usage_id)
    with pytest.raises(host.libvirt.libvirtError) as private:
        secret.value()
    assert private.value.get_error_code() == host.libvirt.VIR_ERR_INVALID_SECRET
    secret_xml = secret.XMLDesc(0)
    assert "ephemeral='no'" in secret_xml and "private='yes'" in secret_xml
    assert "<description>hvplug-owned: " in secret_xml  # the ownership marker

    listed = run_json("list", "--domain", domain)
    assert listed == {"domain": domain, "volumes": [{
        "dev": dev, "bus": "scsi", "layer": "source", "protocol": "iscsi",
        "source": volume.usage_id, "portal": "127.0.0.1:3260",
        "secret_uuid": result["secret_uuid"], "secret_usage": None}]}
    verified = run_json("verify", "--domain", domain)
    assert verified["ok"] is True
    assert [(d["dev"], d["source"], d["ok"]) for d in verified["disks"]] == [
        (dev, volume.usage_id, True)]
    assert {c["check"] for c in verified["disks"][0]["checks"]} == {"secret", "portal",
                                                                  "target"}

    detached = detach(domain, volume)
    assert (detached["dev"], detached["live"], detached["persistent"]) == (dev, True, False)
    assert domblklist(domain) == {}
    assert not host.secret_exists(result["secret_uuid"])
    assert usage_secret(host, volume.usage_id) is None
    assert wait_for(lambda: not sessions(volume.tid)), sessions(volume.tid)


def test_data_path_reaches_the_backing_file(host, make_guest, make_volume):
    """QEMU writes through its iSCSI session; the bytes land in tgtd's file."""
    domain, volume = make_guest(), make_volume(size_mib=16)
    dev = attach(domain, volume)["dev"]
    # qemu-io runs against the guest's own drive, found by its qdev id (the
    # disk's <alias>), so QEMU's libiscsi session carries the I/O.
    qdev = disk_alias(host.domain_xml(domain), dev)
    offset, length = 3 << 20, 1 << 20
    report = qemu_io(domain, qdev, f"write -P 0x5a {offset} {length}")
    assert f"wrote {length}/{length} bytes at offset {offset}" in report, report
    qemu_io(domain, qdev, "flush", report=False)

    with open(volume.path, "rb") as backing:
        backing.seek(offset - 512)
        data = backing.read(length + 1024)
    assert data[:512] == bytes(512)
    assert data[512:-512] == b"\x5a" * length
    assert data[-512:] == bytes(512)

    # The other way: bytes put in the backing file are what QEMU reads.
    with open(volume.path, "r+b") as backing:
        backing.seek(8 << 20)
        backing.write(b"\xa5" * 65536)
    report = qemu_io(domain, qdev, f"read -P 0xa5 {8 << 20} 65536")
    assert "Pattern verification failed" not in report, report
    assert f"read 65536/65536 bytes at offset {8 << 20}" in report, report
    report = qemu_io(domain, qdev, f"read -P 0xa5 {offset} 4096")
    assert "Pattern verification failed" in report, report  # the check can fail
    detach(domain, volume)


def test_already_attached_and_not_attached(host, make_guest, make_volume):
    domain, volume, other = make_guest(), make_volume(), make_volume()
    result = attach(domain, volume)
    live_before = host.domain_xml(domain)

    rc, out, err = run_cli("attach", "--domain", domain, "--bus", "scsi", info=volume)
    assert rc == 1, (out, err)
    assert "already attached" in err and "as sda" in err and domain in err
    assert "Traceback" not in err
    assert host.domain_xml(domain) == live_before
    assert host.secret_exists(result["secret_uuid"])

    rc, out, err = run_cli("detach", "--domain", domain, info=other)
    assert rc == 1, (out, err)
    assert "is not attached" in err and "nothing was changed" in err
    assert "Traceback" not in err
    assert usage_secret(host, other.usage_id) is None
    rc, out, err = run_cli("detach", "--domain", domain, "--dev", "sdb")
    assert rc == 1 and "Device sdb is not attached" in err, (out, err)
    assert host.domain_xml(domain) == live_before
    assert host.secret_exists(result["secret_uuid"])

    # Detach by device name alone: the secret is found through the disk.
    detached = detach(domain, dev="sda")
    assert (detached["dev"], detached["live"]) == ("sda", True)
    assert domblklist(domain) == {}
    assert not host.secret_exists(result["secret_uuid"])
    assert wait_for(lambda: not sessions(volume.tid)), sessions(volume.tid)


def test_extend_to_current_size(host, make_guest, make_volume):
    # tgtd cannot grow a LUN while it is exported (no live resize of the
    # backing store), so the only extend the real stack can show is one to
    # the size the LUN already has: QEMU accepts it and reports that size.
    domain, volume = make_guest(), make_volume(size_mib=32)
    dev = attach(domain, volume)["dev"]
    driver = LibvirtNetVolumeDriver(host)
    assert driver.extend_volume(volume, domain, dev, volume.size) == volume.size
    assert host.block_capacity(domain, dev) == volume.size
    detach(domain, volume)

