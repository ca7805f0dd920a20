"""Which secrets are hvplug's, who still needs one, and when it may go."""

import copy

import pytest

from hvplug import exception, templates
from hvplug.virt import attach, secrets
from hvplug.virt.config import LibvirtConfigDeviceXML as DeviceXML


def usage_of(info):
    return f"{info['data']['target_iqn']}/{info['data']['target_lun']}"


def secret_state(fake_libvirt, uuid):
    return fake_libvirt._hosts["qemu:///system"].secrets.get(uuid)


def define_foreign(host, usage, ephemeral=False, private=False, value=b"theirs"):
    """A secret someone else defined (no hvplug marker) for ``usage``."""
    xml = (f"<secret ephemeral='{'yes' if ephemeral else 'no'}' "
           f"private='{'yes' if private else 'no'}'><description>nova's</description>"
           f"<usage type='iscsi'><target>{usage}</target></usage></secret>")
    secret = host.define_secret_xml(xml)
    secret.setValue(value)
    return secret.UUIDString()


@pytest.fixture
def set_value_calls(fake_libvirt, monkeypatch):
    calls, real = [], fake_libvirt.virSecret.setValue

    def record(self, value, flags=0):
        calls.append(self.UUIDString())
        return real(self, value, flags)
    monkeypatch.setattr(fake_libvirt.virSecret, "setValue", record)
    return calls


def chap_disk(usage, dev="sda", uuid=None):
    ref = f"uuid='{uuid}'" if uuid else f"usage='{usage}'"
    return (f"<disk type='network' device='disk'><source protocol='iscsi' name='{usage}'>"
            f"<host name='127.0.0.1' port='3260'/><auth username='u'>"
            f"<secret type='iscsi' {ref}/></auth></source>"
            f"<target dev='{dev}' bus='scsi'/></disk>")


def test_owned_secret_is_private_persistent_and_marked(host, registry, guest, make_info):
    info = make_info()
    result = attach.attach_volume(host, registry, guest, info, bus="scsi")
    conf = secrets.read_config(host.secret_by_uuid(result.secret_uuid))
    assert (conf.private, conf.ephemeral) == (True, False)
    assert conf.description == f"{secrets.OWNER_MARKER} CHAP secret for iSCSI volume " \
                               f"{usage_of(info)}"
    assert secrets.is_owned(conf)
    assert [c.uuid for _, c in secrets.owned_secrets(host)] == [result.secret_uuid]


@pytest.mark.parametrize("changed", ["private", "ephemeral", "description"])
def test_only_the_marker_and_private_persistent_make_a_secret_owned(changed):
    conf = secrets.config.LibvirtConfigSecret(
        ephemeral=False, private=True, description=secrets.owned_description("iqn.x/1"),
        usage_type="iscsi", usage_id="iqn.x/1")
    assert secrets.is_owned(conf)
    setattr(conf, changed, {"private": False, "ephemeral": True,
                            "description": "CHAP of iqn.x/1 hvplug-owned:"}[changed])
    assert not secrets.is_owned(conf)


def test_foreign_persistent_secret_is_used_as_is_and_kept(host, registry, guest, make_info,
                                                          fake_libvirt, fake_execute,
                                                          set_value_calls):
    info = make_info(password="mine")
    foreign = define_foreign(host, usage_of(info))
    set_value_calls.clear()
    result = attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi")
    assert result.secret_uuid == foreign
    assert set_value_calls == []
    assert secret_state(fake_libvirt, foreign).value == b"theirs"
    assert [cmd[:2] for cmd in fake_execute.calls] == [("qemu-img", "info")]  # the proof
    attach.detach_volume(host, registry, guest, connection_info=info)
    assert host.domain_xml(guest).count("<disk") == 0
    assert secret_state(fake_libvirt, foreign).value == b"theirs"
    assert secrets.owned_secrets(host) == []


def test_foreign_secret_not_used_when_the_login_fails(host, registry, guest, make_info,
                                                      fake_libvirt, fake_execute):
    info = make_info()
    foreign = define_foreign(host, usage_of(info))
    fake_execute.fail_with = ("iSCSI: Failed to connect to LUN : Failed to log in to "
                              "target. Status: Authentication failure(513)")
    with pytest.raises(exception.AuthenticationFailed):
        attach.attach_volume(host, registry, guest, info, bus="scsi")
    assert "<disk" not in host.domain_xml(guest)
    assert secret_state(fake_libvirt, foreign).value == b"theirs"


def test_foreign_ephemeral_secret_is_refused(host, registry, guest, make_info, fake_libvirt,
                                             set_value_calls):
    info = make_info()
    foreign = define_foreign(host, usage_of(info), ephemeral=True)
    set_value_calls.clear()
    with pytest.raises(exception.ForeignSecretUnusable) as err:
        attach.attach_volume(host, registry, guest, info, bus="scsi")
    assert err.value.exit_code == 1
    assert foreign in str(err.value) and "ephemeral" in str(err.value)
    assert f"virsh secret-undefine {foreign}" in str(err.value)
    assert "<disk" not in host.domain_xml(guest) and set_value_calls == []
    assert secret_state(fake_libvirt, foreign).value == b"theirs"


def test_foreign_ephemeral_secret_exit_code_through_the_cli(run_cli, host, guest, make_info):
    import json
    info = make_info()
    define_foreign(host, usage_of(info), ephemeral=True)
    rc, _out, err = run_cli("attach", "--domain", guest, "--connection-info", "-",
                            stdin=json.dumps(info))
    assert rc == 1 and "was not created by hvplug" in err and "Traceback" not in err


def owned(host, usage):
    conf = secrets.config.LibvirtConfigSecret(
        ephemeral=False, private=True, description=secrets.owned_description(usage),
        usage_type="iscsi", usage_id=usage)
    secret = host.define_secret_xml(conf.to_xml())
    secret.setValue(b"pw")
    return secret


def users_of(host, secret):
    conf = secrets.read_config(secret)
    return {(u.domain, u.where, u.dev) for u in secrets.users(host, secrets.SecretRef.of(conf))}


def test_users_by_uuid_and_by_usage_live_and_config(host, make_guest):
    usage = "iqn.2010-10.org.openstack:volume-u/1"
    secret = owned(host, usage)
    live_only, stopped = make_guest(), make_guest(persistent=True, running=False)
    unrelated, other = make_guest(), owned(host, "iqn.2010-10.org.openstack:volume-o/1")
    host.attach_device(live_only, DeviceXML(chap_disk(usage, "sda", uuid=secret.UUIDString())))
    host.attach_device(stopped, DeviceXML(chap_disk(usage, "sdb")), live=False, persistent=True)
    host.attach_device(unrelated, DeviceXML(chap_disk(other.usageID(), "sda", uuid=other.UUIDString())))
    assert users_of(host, secret) == {(live_only, "live", "sda"), (stopped, "config", "sdb")}


def test_users_in_a_managed_save_image_only(host, make_guest):
    usage = "iqn.2010-10.org.openstack:volume-m/1"
    secret, name = owned(host, usage), make_guest(persistent=True)
    host.attach_device(name, DeviceXML(chap_disk(usage, "sdc")), live=True)  # not in the config
    host.domain_call(name, lambda dom: dom.managedSave(0))
    assert users_of(host, secret) == {(name, "managed-save", "sdc")}


def test_users_inside_a_backing_store(host, tmp_path):
    usage = "iqn.2010-10.org.openstack:volume-b/1"
    secret = owned(host, usage)
    (tmp_path / "overlay.qcow2").write_bytes(b"")
    backing = chap_disk(usage, uuid=secret.UUIDString()).split("<target")[0].replace(
        "<disk type='network' device='disk'>", "<backingStore type='network'>")
    disk = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{tmp_path}/overlay.qcow2'/>{backing}</backingStore>"
            f"<target dev='vda' bus='virtio'/></disk>")
    xml = templates.guest_xml("layered", domain_type="kvm").replace(
        "<devices>", f"<devices>{disk}")
    host.call(lambda conn: conn.defineXML(xml))
    assert users_of(host, secret) == {("layered", "config", "vda")}


def test_users_in_snapshot_metadata(host, make_guest):
    usage = "iqn.2010-10.org.openstack:volume-s/1"
    secret, name = owned(host, usage), make_guest(persistent=True)
    host.attach_device(name, DeviceXML(chap_disk(usage, "sdd")), live=True)
    host.domain_call(name, lambda dom: dom.snapshotCreateXML(
        "<domainsnapshot><name>s1</name><disks><disk name='sdd' snapshot='no'/></disks>"
        "</domainsnapshot>", 16))
    host.detach_device(name, DeviceXML(chap_disk(usage, "sdd")), "sdd", live=True)
    assert users_of(host, secret) == {(name, "snapshot s1", "sdd")}


def test_release_keeps_a_secret_a_managed_save_image_needs(host, make_guest):
    usage = "iqn.2010-10.org.openstack:volume-r/1"
    secret, name = owned(host, usage), make_guest(persistent=True)
    host.attach_device(name, DeviceXML(chap_disk(usage, "sda", uuid=secret.UUIDString())), live=True)
    host.domain_call(name, lambda dom: dom.managedSave(0))
    assert secrets.release_secret(host, secret) == f"kept: used by '{name}' (managed-save, sda)"
    assert host.secret_exists(secret.UUIDString())
    host.domain_call(name, lambda dom: dom.managedSaveRemove(0))
    assert secrets.release_secret(host, secret) == "removed"
    assert not host.secret_exists(secret.UUIDString())


def test_release_never_removes_a_foreign_secret(host):
    uuid = define_foreign(host, "iqn.2010-10.org.openstack:volume-f/1")
    assert secrets.release_secret(host, host.secret_by_uuid(uuid)) == "kept: not hvplug's"
    assert host.secret_exists(uuid)


def test_a_secret_whose_value_cannot_be_set_is_not_left(host, fake_libvirt, monkeypatch):
    def refuse(self, value, flags=0):
        raise fake_libvirt.libvirtError("value refused", fake_libvirt.VIR_ERR_INVALID_ARG)
    monkeypatch.setattr(fake_libvirt.virSecret, "setValue", refuse)
    conf = secrets.config.LibvirtConfigSecret(usage_type="iscsi", usage_id="iqn.v/1")
    with pytest.raises(fake_libvirt.libvirtError):
        secrets.ensure_secret(host, conf, b"pw", prove=lambda: None)
    assert host.list_secrets() == []
