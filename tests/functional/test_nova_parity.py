"""What a Nova or virsh user expects of a volume, against real libvirtd, QEMU and tgtd.

Each test checks what QEMU itself made of hvplug's XML (the monitor,
``virsh blkdeviotune``, ``domblkinfo``) and that I/O goes where it should.
"""

import copy
import json
import re

import pytest

from hvplug import exception
from hvplug.target.tgtd_ipc import TgtdIPC
from hvplug.virt import attach, extend
from hvplug.virt.volume.registry import VolumeDriverRegistry
from tests.functional.helpers import (
    disk_alias,
    domblklist,
    qemu_io,
    run_cli,
    virsh,
    wait_for,
)


@pytest.fixture
def registry(host):
    return VolumeDriverRegistry(host)


def qtree_device(domain: str, qdev: str) -> str:
    """The ``info qtree`` block of the device QEMU knows as ``qdev`` (its
    first line names the device's driver: ``dev: scsi-hd``, ``scsi-block``)."""
    tree = virsh("qemu-monitor-command", domain, "--hmp", "info qtree")
    blocks = re.split(r"\n(?=\s*dev: )", tree)
    found = [b for b in blocks if re.search(rf'\bid "{re.escape(qdev)}"', b)]
    assert found, f"no device {qdev} in:\n{tree}"
    return found[0]


def test_multiattach_burst_qos_and_block_sizes_reach_qemu(host, registry, make_guest,
                                                          make_volume):
    domain, volume = make_guest(), make_volume()
    info = copy.deepcopy(dict(volume))
    info["multiattach"] = True  # at the top level, where Nova puts it
    info["data"].update(logical_block_size=4096, physical_block_size=4096, qos_specs={
        "total_bytes_sec": 10485760, "total_bytes_sec_max": 20971520,
        "total_bytes_sec_max_length": 30, "read_iops_sec": 100, "read_iops_sec_max": 200,
        "write_iops_sec": 50, "size_iops_sec": 4096})
    result = attach.attach_volume(host, registry, domain, info, bus="scsi")
    tune = virsh("blkdeviotune", domain, result.dev)
    values = dict(re.findall(r"^(\w+)\s*:\s*(\d+)", tune, re.M))
    assert values["total_bytes_sec"] == "10485760", tune
    assert values["total_bytes_sec_max"] == "20971520", tune
    assert values["total_bytes_sec_max_length"] == "30", tune
    assert (values["read_iops_sec"], values["read_iops_sec_max"]) == ("100", "200"), tune
    assert (values["write_iops_sec"], values["size_iops_sec"]) == ("50", "4096"), tune

    xml = host.domain_xml(domain)
    assert "<shareable/>" in xml and "cache='none'" in xml
    device = qtree_device(domain, disk_alias(xml, result.dev))
    assert "dev: scsi-hd" in device, device
    assert re.search(r"logical_block_size = 4096", device), device
    assert re.search(r"physical_block_size = 4096", device), device
    attach.detach_volume(host, registry, domain, dev=result.dev)


def test_lun_passthrough_is_scsi_block_and_io_reaches_the_backing_file(
        host, registry, make_guest, make_volume):
    domain, volume = make_guest(), make_volume(size_mib=16)
    result = attach.attach_volume(host, registry, domain, copy.deepcopy(dict(volume)),
                                  bus="scsi", device="lun")
    xml = host.domain_xml(domain)
    assert "device='lun'" in xml and "<auth username=" in xml
    qdev = disk_alias(xml, result.dev)
    device = qtree_device(domain, qdev)
    assert "dev: scsi-block" in device, device
    report = qemu_io(domain, qdev, "write -P 0x3c 1048576 65536")
    assert "wrote 65536/65536 bytes" in report, report
    qemu_io(domain, qdev, "flush", report=False)
    with open(volume.path, "rb") as backing:
        backing.seek(1 << 20)
        assert backing.read(65536) == b"\x3c" * 65536
    attach.detach_volume(host, registry, domain, dev=result.dev)
    with pytest.raises(exception.InvalidInput, match="needs bus scsi"):
        attach.attach_volume(host, registry, domain, copy.deepcopy(dict(volume)),
                             bus="virtio", device="lun")


def test_config_only_attach_and_detach_on_a_running_persistent_domain(
        host, registry, make_guest, make_volume):
    domain, volume = make_guest(persistent=True), make_volume()
    result = attach.attach_volume(host, registry, domain, copy.deepcopy(dict(volume)),
                                  bus="scsi", config_only=True)
    assert (result.live, result.persistent) == (False, True)
    assert domblklist(domain) == {}
    assert domblklist(domain, inactive=True) == {result.dev: volume.usage_id}
    assert host.secret_exists(result.secret_uuid)
    detached = attach.detach_volume(host, registry, domain, copy.deepcopy(dict(volume)),
                                    config_only=True)
    assert (detached.live, detached.persistent) == (False, True)
    assert domblklist(domain, inactive=True) == {}
    assert not host.secret_exists(result.secret_uuid)


def test_extend_after_the_lun_grew(host, registry, make_guest, make_volume):
    """tgtd's LUN is re-created on a larger backing file; QEMU learns the size."""
    domain, volume = make_guest(), make_volume(size_mib=32)
    result = attach.attach_volume(host, registry, domain, copy.deepcopy(dict(volume)),
                                  bus="scsi")
    assert host.block_capacity(domain, result.dev) == 32 << 20
    with open(volume.path, "r+b") as backing:
        backing.truncate(48 << 20)
    ipc = TgtdIPC()
    ipc.delete_lun(volume.tid, 1)
    ipc.new_lun(volume.tid, 1, str(volume.path))
    grown = extend.extend_volume(host, registry, domain,
                                 connection_info=copy.deepcopy(dict(volume)))
    assert (grown.old_size, grown.new_size) == (32 << 20, 48 << 20)
    assert wait_for(lambda: host.block_capacity(domain, result.dev) == 48 << 20)
    attach.detach_volume(host, registry, domain, dev=result.dev)


def test_the_commands(host, make_guest, make_volume, tmp_path):
    """--device, --config-only and extend through the hvplug command."""
    domain, volume = make_guest(persistent=True), make_volume(size_mib=32)
    info = tmp_path / "info.json"
    info.write_text(json.dumps(dict(volume)))
    rc, out, err = run_cli("attach", "--domain", domain, "--connection-info", str(info),
                           "--bus", "scsi", "--config-only", "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert (result["live"], result["persistent"]) == (False, True)
    assert domblklist(domain) == {} and domblklist(domain, inactive=True)
    rc, _, err = run_cli("detach", "--domain", domain, "--dev", result["dev"], "--config-only")
    assert rc == 0, err
    assert domblklist(domain, inactive=True) == {}

    rc, out, err = run_cli("attach", "--domain", domain, "--connection-info", str(info),
                           "--bus", "scsi", "--device", "lun", "--json")
    assert rc == 0, err
    dev = json.loads(out)["dev"]
    assert "device='lun'" in host.domain_xml(domain)
    rc, _, err = run_cli("detach", "--domain", domain, "--dev", dev)
    assert rc == 0, err
    rc, _, err = run_cli("attach", "--domain", domain, "--connection-info", str(info),
                         "--device", "lun", "--bus", "virtio")
    assert rc == 2 and "needs bus scsi" in err and "Traceback" not in err

    rc, out, err = run_cli("attach", "--domain", domain, "--connection-info", str(info),
                           "--bus", "scsi", "--json")
    dev = json.loads(out)["dev"]
    with open(volume.path, "r+b") as backing:
        backing.truncate(40 << 20)
    ipc = TgtdIPC()
    ipc.delete_lun(volume.tid, 1)
    ipc.new_lun(volume.tid, 1, str(volume.path))
    rc, _, err = run_cli("extend", "--domain", domain, "--dev", dev)
    assert rc == 2 and "--connection-info" in err and "--size" in err  # CHAP: a secret is private
    rc, out, err = run_cli("extend", "--domain", domain, "--connection-info", str(info))
    assert rc == 0, err
    assert "32 MiB" in out and "40 MiB" in out, out
    rc, out, err = run_cli("extend", "--domain", domain, "--dev", dev, "--size", "40M", "--json")
    assert rc == 0 and json.loads(out)["new_size"] == 40 << 20, err
    assert volume.password not in out + err
    run_cli("detach", "--domain", domain, "--dev", dev)
