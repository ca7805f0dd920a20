import pytest

from hvplug import exception
from hvplug.virt import config
from hvplug.virt.config import LibvirtConfigDeviceXML as DeviceXML
from hvplug.virt.host import Host


def secret_conf(usage_id="iqn.2010-10.org.openstack:volume-1/1"):
    conf = config.LibvirtConfigSecret()
    conf.private = True
    conf.usage_type, conf.usage_id = "iscsi", usage_id
    return conf


def test_connection_is_lazy_and_uses_config(fake_libvirt, config_fixture):
    config_fixture.config(group="libvirt", connection_uri="test:///hvplug")
    host = Host()
    assert host.uri == "test:///hvplug" and host._conn is None
    assert host.connection().getURI() == "test:///hvplug"
    assert Host("qemu:///session").uri == "qemu:///session"


def test_daemon_down_is_a_clear_error(fake_libvirt):
    fake_libvirt.simulate_daemon_down()
    with pytest.raises(exception.LibvirtConnectionFailed) as err:
        Host("qemu:///system").connection()
    assert "Is libvirtd running?" in str(err.value) and "qemu:///system" in str(err.value)


def test_reconnects_once_when_the_connection_drops(host, guest, fake_libvirt):
    first = host.connection()
    fake_libvirt.simulate_connection_drop()
    assert host.domain_state(guest) == (True, False)
    assert host.connection() is not first


def test_reconnects_after_a_closed_socket_error(host, guest, fake_libvirt):
    first = host.connection()
    fake_libvirt.simulate_connection_drop()
    with pytest.raises(fake_libvirt.libvirtError):
        first.lookupByName(guest)  # the first call on a dead link: End of file
    assert host.domain_state(guest) == (True, False)  # next: client socket is closed
    assert host.connection() is not first


def test_no_reconnect_for_ordinary_errors(host, fake_libvirt):
    first = host.connection()
    with pytest.raises(exception.DomainNotFound):
        host.domain_xml("missing")
    assert host.connection() is first


def test_reconnect_happens_only_once(host, guest, fake_libvirt):
    host.connection()
    fake_libvirt.simulate_connection_drop()

    def always_drop(conn):
        fake_libvirt.simulate_connection_drop()
        return conn.lookupByName(guest)
    with pytest.raises(fake_libvirt.libvirtError) as err:
        host.call(always_drop)
    assert err.value.get_error_code() in (fake_libvirt.VIR_ERR_SYSTEM_ERROR,
                                          fake_libvirt.VIR_ERR_INVALID_CONN)


def test_define_secret_xml_and_lookup_by_uuid(host, fake_libvirt):
    secret = host.define_secret_xml(secret_conf().to_xml())
    uuid = secret.UUIDString()
    assert host.secret_by_uuid(uuid).UUIDString() == uuid
    assert host.find_secret("iscsi", "iqn.2010-10.org.openstack:volume-1/1").UUIDString() == uuid
    assert [s.UUIDString() for s in host.list_secrets()] == [uuid]
    assert host.secret_by_uuid("6f1c0b5e-0000-4000-8000-000000000000") is None
    state = fake_libvirt._hosts["qemu:///system"].secrets[uuid]
    assert (state.private, state.ephemeral, state.value) == (True, False, None)


def test_find_secret_absent_and_other_errors(host, fake_libvirt, monkeypatch):
    assert host.find_secret("iscsi", "nothing/1") is None
    conn = host.connection()

    def broken(*args):
        raise fake_libvirt.libvirtError("internal error", fake_libvirt.VIR_ERR_INTERNAL_ERROR)
    monkeypatch.setattr(conn, "secretLookupByUsage", broken)
    with pytest.raises(fake_libvirt.libvirtError):
        host.find_secret("iscsi", "nothing/1")


def test_bad_usage_type(host):
    with pytest.raises(exception.InvalidInput):
        host.find_secret("kerberos", "x")


def test_delete_secret(host):
    uuid = host.define_secret_xml(secret_conf().to_xml()).UUIDString()
    assert host.secret_exists(uuid)
    assert host.delete_secret(uuid) is True
    assert host.delete_secret(uuid) is False
    assert not host.secret_exists(uuid)


DISK = ("<disk type='network' device='disk'><source protocol='iscsi' "
        "name='iqn.2010-10.org.openstack:volume-1/1'><host name='127.0.0.1' port='3260'/>"
        "</source><target dev='sda' bus='scsi'/></disk>")


def test_domain_documents_cover_live_config_saved_and_snapshots(host, make_guest):
    transient, stopped = make_guest(), make_guest(persistent=True, running=False)
    saved, snapped = make_guest(persistent=True), make_guest(persistent=True)
    host.attach_device(saved, DeviceXML(DISK), live=True)
    host.domain_call(saved, lambda dom: dom.managedSave(0))
    host.domain_call(snapped, lambda dom: dom.snapshotCreateXML(
        "<domainsnapshot><name>s1</name></domainsnapshot>", 16))
    places = {(doc.domain, doc.where) for doc in host.domain_documents()}
    assert places == {(transient, "live"), (stopped, "config"),
                      (saved, "config"), (saved, "managed-save"),
                      (snapped, "live"), (snapped, "config"), (snapped, "snapshot s1")}
    (image,) = [d.xml for d in host.domain_documents() if d.where == "managed-save"]
    assert "volume-1/1" in image
    assert host.domain_xmls()[saved] == [host.domain_xml(saved, inactive=True)]


def test_domain_info_sees_a_managed_save_image(host, make_guest):
    name = make_guest(persistent=True)
    info = host.domain_info(name)
    assert (info.active, info.persistent, info.managed_save) == (True, True, False)
    assert info.uuid == host.domain_uuid(name)
    host.domain_call(name, lambda dom: dom.managedSave(0))
    info = host.domain_info(name)
    assert (info.active, info.persistent, info.managed_save) == (False, True, True)
    assert "<domain" in host.managed_save_xml(name)


def test_documents_of_a_vanished_domain_are_skipped(host, make_guest, fake_libvirt,
                                                   monkeypatch):
    gone, kept = make_guest(), make_guest()
    real = fake_libvirt.virConnect.listAllDomains

    def list_then_destroy(self, flags=0):  # gone vanishes between listing and fetching
        found = real(self, flags)
        if any(dom.name() == gone for dom in found):
            self.lookupByName(gone).destroy()
        return found
    monkeypatch.setattr(fake_libvirt.virConnect, "listAllDomains", list_then_destroy)
    assert [(d.domain, d.where) for d in host.domain_documents()] == [(kept, "live")]


def test_stale_domain_handle_is_looked_up_again(host, fake_libvirt):
    from hvplug import templates
    xml = templates.guest_xml("recreated", domain_type="kvm")
    host.call(lambda conn: conn.createXML(xml, 0))
    assert host.domain_state("recreated") == (True, False)
    host.domain_call("recreated", lambda dom: dom.destroy())
    host.call(lambda conn: conn.createXML(xml, 0))
    assert host.domain_state("recreated") == (True, False)


def test_block_resize_and_capacity(host, guest, fake_libvirt):
    disk = ("<disk type='network' device='disk'><source protocol='iscsi' "
            "name='iqn.2010-10.org.openstack:volume-2/1'><host name='127.0.0.1' port='3260'/>"
            "</source><target dev='sda' bus='scsi'/></disk>")
    fake_libvirt.set_lun_size("iqn.2010-10.org.openstack:volume-2", 1, 1 << 30)
    host.attach_device(guest, DeviceXML(disk))
    assert host.block_capacity(guest, "sda") == 1 << 30
    fake_libvirt.set_lun_size("iqn.2010-10.org.openstack:volume-2", 1, 2 << 30)
    host.block_resize(guest, "sda", 2 << 30)
    assert host.block_capacity(guest, "sda") == 2 << 30


def test_guest_domain_type(host, fake_libvirt):
    assert host.guest_domain_type() in ("kvm", "qemu")


def test_undefine_secret_takes_the_object_and_tolerates_a_race(host):
    secret = host.define_secret_xml(secret_conf().to_xml())
    uuid = secret.UUIDString()
    stale = host.secret_by_uuid(uuid)
    assert host.undefine_secret(secret) is True
    assert host.undefine_secret(stale) is False  # another process removed it first
    assert not host.secret_exists(uuid)


def test_close_closes_the_connection_with_domain_handles_cached(host, guest, fake_libvirt,
                                                               monkeypatch):
    """libvirt closes a connection with its last reference, and each domain
    handle Host keeps is one: close() lets them go, so it really closes."""
    host.domain_uuid(guest)
    left = []
    real_close = fake_libvirt.virConnect.close
    monkeypatch.setattr(fake_libvirt.virConnect, "close",
                        lambda self: left.append(real_close(self)) or left[-1])
    host.close()
    assert left == [0]
