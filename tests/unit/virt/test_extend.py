"""hvplug's extend flow against the fake libvirt (the functional test grows a real tgtd LUN)."""

import copy

import pytest

from hvplug import exception
from hvplug.virt import attach, extend
from hvplug.virt.volume.net import LibvirtNetVolumeDriver


def test_extend_by_connection_info_reads_the_new_size_from_the_target(
        host, registry, guest, make_info, fake_libvirt, monkeypatch):
    info = make_info()
    result = attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi")
    old = host.block_capacity(guest, result.dev)
    fake_libvirt.set_lun_size(info["data"]["target_iqn"], 1, 3 << 30)
    asked = []

    def qemu_img_info(driver, target, credentials, parse=True):
        asked.append((target.source_name, credentials))
        return {"virtual-size": 3 << 30}
    monkeypatch.setattr(LibvirtNetVolumeDriver, "_qemu_img_info", qemu_img_info)
    grown = extend.extend_volume(host, registry, guest, connection_info=copy.deepcopy(info))
    assert grown.to_dict() == {"domain": guest, "dev": result.dev, "old_size": old,
                               "new_size": 3 << 30,
                               "driver": "hvplug.virt.volume.net.LibvirtNetVolumeDriver"}
    data = info["data"]
    assert asked == [(f"{data['target_iqn']}/1", (data["auth_username"], data["auth_password"]))]
    assert host.block_capacity(guest, result.dev) == 3 << 30


def test_extend_by_dev_with_a_size(host, registry, guest, make_info, fake_libvirt):
    info = make_info()
    result = attach.attach_volume(host, registry, guest, info, bus="scsi")
    fake_libvirt.set_lun_size(info["data"]["target_iqn"], 1, 2 << 30)
    grown = extend.extend_volume(host, registry, guest, dev=result.dev, size=2 << 30)
    assert grown.new_size == 2 << 30 and grown.dev == result.dev


def test_extend_by_dev_of_a_chap_volume_needs_its_credentials_or_a_size(
        host, registry, guest, make_info):
    result = attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    with pytest.raises(exception.InvalidInput) as err:
        extend.extend_volume(host, registry, guest, dev=result.dev)
    assert "--connection-info" in err.value.message and "--size" in err.value.message
    assert err.value.exit_code == 2


def test_extend_needs_an_attached_volume_of_a_running_domain(host, registry, guest,
                                                            make_guest, make_info):
    with pytest.raises(exception.VolumeNotAttached):
        extend.extend_volume(host, registry, guest, connection_info=make_info(), size=1 << 30)
    stopped = make_guest(persistent=True, running=False)
    with pytest.raises(exception.DomainNotRunning):
        extend.extend_volume(host, registry, stopped, dev="sda", size=1 << 30)
    with pytest.raises(exception.InvalidInput, match="positive"):
        extend.extend_volume(host, registry, guest, dev="sda", size=0)
    with pytest.raises(exception.InvalidInput, match="connection_info or a target device"):
        extend.extend_volume(host, registry, guest)
