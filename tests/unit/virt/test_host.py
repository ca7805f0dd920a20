import pytest

from hvplug import exception
from hvplug.virt import config
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


def test_define_secret_creates_private_and_resets_value(host, fake_libvirt):
    uuid = host.define_secret(secret_conf(), b"first")
    assert host.define_secret(secret_conf(), b"second") == uuid
    secret = host.find_secret("iscsi", "iqn.2010-10.org.openstack:volume-1/1")
    assert secret.UUIDString() == uuid
    state = fake_libvirt._hosts["qemu:///system"].secrets[uuid]
    assert (state.private, state.ephemeral, state.value) == (True, False, b"second")


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
    uuid = host.define_secret(secret_conf(), b"v")
    assert host.secret_exists(uuid)
    assert host.delete_secret(uuid) is True
    assert host.delete_secret(uuid) is False
    assert not host.secret_exists(uuid)


def test_domains_using_secret_sees_live_and_persistent_xml(host, make_guest):
    uuid = host.define_secret(secret_conf(), b"v")
    disk = (f"<disk type='network' device='disk'><source protocol='iscsi' "
            f"name='iqn.2010-10.org.openstack:volume-1/1'><host name='127.0.0.1' port='3260'/>"
            f"<auth username='u'><secret type='iscsi' uuid='{uuid}'/></auth></source>"
            f"<target dev='sda' bus='scsi'/></disk>")
    live_only, config_only, unrelated = make_guest(), make_guest(persistent=True), make_guest()
    host.attach_device(live_only, disk, live=True)
    host.attach_device(config_only, disk, live=False, persistent=True)
    assert sorted(host.domains_using_secret(uuid)) == sorted([live_only, config_only])
    assert unrelated not in host.domains_using_secret(uuid)


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
    host.attach_device(guest, disk)
    assert host.block_capacity(guest, "sda") == 1 << 30
    fake_libvirt.set_lun_size("iqn.2010-10.org.openstack:volume-2", 1, 2 << 30)
    host.block_resize(guest, "sda", 2 << 30)
    assert host.block_capacity(guest, "sda") == 2 << 30


def test_guest_domain_type(host, fake_libvirt):
    assert host.guest_domain_type() in ("kvm", "qemu")
