"""Where a volume sits decides what attach and detach may do: a managed save
image, a live-only attach promoted to the config, a volume below an overlay."""

import copy

import pytest
from lxml import etree

from hvplug import exception, templates
from hvplug.virt import attach, guest_disks, inspect


def secret_uuids(host):
    return {s.UUIDString() for s in host.list_secrets()}


def devs(host, name, inactive=False):
    return guest_disks.target_devs(host.domain_xml(name, inactive=inactive))


def snapshot(host, name):
    """Everything an attach or detach could change on domain ``name``."""
    saved = host.domain_call(name, lambda dom: dom.hasManagedSaveImage(0))
    return (host.domain_xml(name, inactive=True), secret_uuids(host),
            host.managed_save_xml(name) if saved else None)


# ---------------------------------------------------------------- managed save

@pytest.fixture
def saved_guest(host, registry, make_guest, make_info):
    """A persistent domain with one volume, then managed-saved: ``(name, info)``."""
    name, info = make_guest(persistent=True), make_info()
    attach.attach_volume(host, registry, name, copy.deepcopy(info), bus="scsi",
                         persistent=True)
    host.domain_call(name, lambda dom: dom.managedSave(0))
    return name, info


@pytest.mark.parametrize("persistent", [False, True])
def test_managed_saved_domain_refuses_attach(host, registry, saved_guest, make_info,
                                             persistent):
    name, _ = saved_guest
    before = snapshot(host, name)
    with pytest.raises(exception.ManagedSaveConflict) as err:
        attach.attach_volume(host, registry, name, make_info(), bus="scsi",
                             persistent=persistent)
    assert "attaching a volume" in str(err.value) and f"virsh start {name}" in str(err.value)
    assert err.value.exit_code == 1
    assert snapshot(host, name) == before


@pytest.mark.parametrize("by", ["connection_info", "dev"])
def test_managed_saved_domain_refuses_detach(host, registry, saved_guest, by):
    name, info = saved_guest
    before = snapshot(host, name)
    which = {"connection_info": info} if by == "connection_info" else {"dev": "sda"}
    with pytest.raises(exception.ManagedSaveConflict) as err:
        attach.detach_volume(host, registry, name, **which)
    assert "detaching a volume" in str(err.value)
    assert snapshot(host, name) == before
    assert "sda" in guest_disks.target_devs(before[2])  # the image still has the disk


def test_started_again_the_domain_can_be_detached(host, registry, saved_guest):
    name, info = saved_guest
    host.domain_call(name, lambda dom: dom.create())
    result = attach.detach_volume(host, registry, name, connection_info=info)
    assert (result.live, result.persistent) == (True, True)
    assert secret_uuids(host) == set()


# ---------------------------------------------------------------- promotion

def test_persistent_attach_of_a_live_only_volume_promotes_it(host, registry, make_guest,
                                                             make_info, fake_execute):
    name, info = make_guest(persistent=True), make_info()
    first = attach.attach_volume(host, registry, name, copy.deepcopy(info), bus="scsi")
    assert (first.live, first.persistent, devs(host, name, inactive=True)) == (True, False,
                                                                                set())
    promoted = attach.attach_volume(host, registry, name, copy.deepcopy(info), bus="scsi",
                                    persistent=True)
    assert (promoted.promoted, promoted.live, promoted.persistent) == (True, True, True)
    assert (promoted.dev, promoted.secret_uuid) == (first.dev, first.secret_uuid)
    assert devs(host, name) == devs(host, name, inactive=True) == {"sda"}
    config_disk = guest_disks.disk_xml(host.domain_xml(name, inactive=True), "sda")
    assert "<alias" not in config_disk and first.secret_uuid in config_disk
    assert secret_uuids(host) == {first.secret_uuid}
    assert [cmd[:2] for cmd in fake_execute.calls] == [("qemu-img", "info")]  # proven first


def test_promoted_volume_is_then_attached_everywhere(host, registry, make_guest, make_info):
    name, info = make_guest(persistent=True), make_info()
    attach.attach_volume(host, registry, name, copy.deepcopy(info), bus="scsi")
    with pytest.raises(exception.VolumeAlreadyAttached) as err:
        attach.attach_volume(host, registry, name, copy.deepcopy(info), bus="scsi")
    assert "sda (live)" in str(err.value)
    attach.attach_volume(host, registry, name, copy.deepcopy(info), persistent=True)
    with pytest.raises(exception.VolumeAlreadyAttached) as err:
        attach.attach_volume(host, registry, name, copy.deepcopy(info), persistent=True)
    assert "sda (live and persistent)" in str(err.value)
    result = attach.detach_volume(host, registry, name, connection_info=info)
    assert (result.live, result.persistent) == (True, True)
    assert devs(host, name) == devs(host, name, inactive=True) == set()
    assert secret_uuids(host) == set()


def test_promotion_through_the_cli_says_so(run_cli, host, make_guest, make_info):
    import json
    name, info = make_guest(persistent=True), json.dumps(make_info())
    assert run_cli("attach", "--domain", name, "--connection-info", "-", stdin=info)[0] == 0
    rc, out, err = run_cli("attach", "--domain", name, "--connection-info", "-",
                           "--persistent", stdin=info)
    assert rc == 0, err
    assert out.strip() == (f"Volume already attached live to domain '{name}' as vda; "
                           "added it to the persistent configuration")


# ---------------------------------------------------------------- backing layers

@pytest.fixture
def layered(host, registry, make_info, tmp_path):
    """A running domain whose vda is an overlay file on top of an iSCSI volume
    (what ``virsh snapshot-create-as --disk-only`` leaves): ``(name, info, overlay)``."""
    info = make_info()
    _, disk_xml, secret_xml = attach.render_volume(registry, copy.deepcopy(info), bus="scsi")
    host.define_secret_xml(secret_xml).setValue(info["data"]["auth_password"].encode())
    source = etree.tostring(etree.fromstring(disk_xml).find("source"), encoding="unicode")
    overlay = tmp_path / "overlay.qcow2"
    overlay.write_bytes(b"")
    disk = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{overlay}'/><backingStore type='network'><format type='raw'/>"
            f"{source}</backingStore><target dev='vda' bus='virtio'/></disk>")
    xml = templates.guest_xml("layered", domain_type="kvm").replace("<devices>",
                                                                    f"<devices>{disk}")
    host.call(lambda conn: conn.createXML(xml, 0))
    return "layered", info, str(overlay)


def test_a_backing_layer_volume_is_refused_for_attach(host, registry, layered):
    name, info, overlay = layered
    before = (host.domain_xml(name), secret_uuids(host))
    with pytest.raises(exception.VolumeIsBackingLayer) as err:
        attach.attach_volume(host, registry, name, info, bus="scsi")
    assert f"backing layer 1 under {overlay} of disk vda" in str(err.value)
    assert f"virsh blockcommit {name} vda --active --pivot" in str(err.value)
    assert (host.domain_xml(name), secret_uuids(host)) == before


def test_list_and_verify_name_the_layer(host, layered):
    name, info, _ = layered
    (uuid,) = secret_uuids(host)
    (row,) = inspect.volume_rows(host, name)
    assert row == {"dev": "vda", "bus": "virtio", "layer": "backing 1", "protocol": "iscsi",
                   "source": f"{info['data']['target_iqn']}/1",
                   "portal": info["data"]["target_portal"], "secret_uuid": uuid,
                   "secret_usage": None}
    (checked,) = inspect.verify_volumes(host, name)
    assert (checked["dev"], checked["layer"], checked["ok"]) == ("vda", "backing 1", True)
    assert [c["check"] for c in checked["checks"]] == ["secret", "portal", "target", "lun"]


@pytest.mark.parametrize("by", ["connection_info", "dev"])
def test_detach_finds_the_volume_below_the_overlay(host, registry, layered, by):
    name, info, overlay = layered
    which = {"connection_info": info} if by == "connection_info" else {"dev": "vda"}
    result = attach.detach_volume(host, registry, name, **which)
    assert (result.dev, result.layer) == ("vda", f"backing layer 1 under {overlay}")
    assert result.driver == "hvplug.virt.volume.net.LibvirtNetVolumeDriver"
    assert devs(host, name) == set()
    assert secret_uuids(host) == set()  # hvplug's, and nothing references it any more


def test_detach_after_a_snapshot_keeps_the_secret_its_metadata_needs(host, registry, guest,
                                                                     make_info, tmp_path):
    info = make_info()
    uuid = attach.attach_volume(host, registry, guest, copy.deepcopy(info),
                                bus="scsi").secret_uuid
    overlay = tmp_path / "top.qcow2"
    host.domain_call(guest, lambda dom: dom.snapshotCreateXML(
        f"<domainsnapshot><name>before</name><disks><disk name='sda' snapshot='external'>"
        f"<source file='{overlay}'/></disk></disks></domainsnapshot>", 16))
    result = attach.detach_volume(host, registry, guest, connection_info=info)
    assert result.layer == f"backing layer 1 under {overlay}"
    assert devs(host, guest) == set()
    assert secret_uuids(host) == {uuid}  # 'before' can still be reverted to
