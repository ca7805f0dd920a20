import copy
import os

import pytest

from hvplug import exception
from hvplug.virt import attach, config, guest_disks
from hvplug.virt.config import LibvirtConfigDeviceXML as DeviceXML
from hvplug.virt.volume.net import LibvirtNetVolumeDriver
from tests.unit.conftest import HOST_IQN
from tests.xmlcheck import assert_valid_disk, assert_valid_secret


def live_disks(host, domain):
    return {d.target_dev: d for d in guest_disks.disks(host.domain_xml(domain))}


def secret_uuids(host):
    return {s.UUIDString() for s in host.call(lambda conn: conn.listAllSecrets())}


def test_attach_chap_volume(host, registry, guest, make_info, fake_libvirt):
    logins = []
    fake_libvirt.set_iscsi_login(lambda *args: logins.append(args))
    info = make_info()
    iqn = info["data"]["target_iqn"]
    result = attach.attach_volume(host, registry, guest, info, bus="scsi")
    assert result.to_dict() == {
        "domain": guest, "dev": "sda", "bus": "scsi",
        "driver": "hvplug.virt.volume.net.LibvirtNetVolumeDriver",
        "secret_uuid": result.secret_uuid, "portal": info["data"]["target_portal"],
        "live": True, "persistent": False, "promoted": False}
    disk = live_disks(host, guest)["sda"]
    assert (disk.source_protocol, disk.source_name) == ("iscsi", f"{iqn}/1")
    assert disk.source_initiator_iqn == HOST_IQN
    assert disk.auth_secret_uuid == result.secret_uuid
    assert disk.serial == info["serial"]
    secret = host.find_secret("iscsi", f"{iqn}/1")
    assert secret.UUIDString() == result.secret_uuid
    assert 'private="yes"' in secret.XMLDesc().replace("'", '"')
    with pytest.raises(fake_libvirt.libvirtError) as err:
        secret.value()
    assert err.value.get_error_code() == fake_libvirt.VIR_ERR_INVALID_SECRET
    host_, port = info["data"]["target_portal"].split(":")
    assert logins == [(host_, int(port), iqn, 1, info["data"]["auth_username"],
                       "s3cret-pw", HOST_IQN)]


def test_first_free_device_names(host, registry, guest, make_info):
    devs = [attach.attach_volume(host, registry, guest, make_info(), bus="scsi").dev
            for _ in range(3)]
    assert devs == ["sda", "sdb", "sdc"]
    assert attach.attach_volume(host, registry, guest, make_info(), bus="virtio").dev == "vda"


def test_default_bus_from_config(host, registry, guest, make_info, config_fixture):
    config_fixture.config(group="libvirt", disk_bus="scsi")
    result = attach.attach_volume(host, registry, guest, make_info())
    assert (result.bus, result.dev) == ("scsi", "sda")


def test_explicit_dev_in_use_changes_nothing(host, registry, guest, make_info):
    attach.attach_volume(host, registry, guest, make_info(), bus="scsi", dev="sdc")
    before = secret_uuids(host)
    with pytest.raises(exception.DeviceNameInUse):
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi", dev="sdc")
    assert secret_uuids(host) == before


def test_already_attached_is_an_error_and_changes_nothing(host, registry, guest, make_info):
    info = make_info()
    attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi")
    before = (secret_uuids(host), set(live_disks(host, guest)))
    with pytest.raises(exception.VolumeAlreadyAttached) as err:
        attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi")
    assert "as sda" in str(err.value)
    assert (secret_uuids(host), set(live_disks(host, guest))) == before


def test_wrong_chap_leaves_nothing_behind(host, registry, guest, make_info, fake_libvirt):
    def login(*args):
        raise RuntimeError(fake_libvirt.ISCSI_AUTH_FAILURE)
    fake_libvirt.set_iscsi_login(login)
    info = make_info()
    with pytest.raises(exception.AuthenticationFailed) as err:
        attach.attach_volume(host, registry, guest, info, bus="scsi")
    assert info["data"]["auth_username"] in str(err.value)
    assert "s3cret-pw" not in str(err.value)
    assert live_disks(host, guest) == {}
    assert secret_uuids(host) == set()


def test_acl_refusal_names_the_initiator(host, registry, guest, make_info, fake_libvirt):
    def login(*args):
        raise RuntimeError("iSCSI: Failed to connect to LUN : Failed to log in to target. "
                           "Status: Authorization failure(514)")
    fake_libvirt.set_iscsi_login(login)
    with pytest.raises(exception.AuthorizationFailed) as err:
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    assert HOST_IQN in str(err.value)
    assert secret_uuids(host) == set()


def test_other_libvirt_failure_is_attach_failed(host, registry, guest, make_info,
                                                fake_libvirt):
    def login(*args):
        raise RuntimeError("iSCSI: Failed to connect to LUN : something else")
    fake_libvirt.set_iscsi_login(login)
    with pytest.raises(exception.AttachFailed) as err:
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    assert "something else" in str(err.value)
    assert secret_uuids(host) == set()


def test_unreachable_target_creates_nothing(host, registry, guest, make_info, dead_portal):
    info = make_info(target_portal=dead_portal)
    with pytest.raises(exception.TargetUnreachable) as err:
        attach.attach_volume(host, registry, guest, info, bus="scsi")
    assert dead_portal in str(err.value)
    assert secret_uuids(host) == set() and live_disks(host, guest) == {}


def test_first_answering_portal_is_used(host, registry, guest, make_info, portal,
                                        dead_portal):
    info = make_info(target_portal=dead_portal,
                     target_portals=[dead_portal, portal],
                     target_iqns=["iqn.2010-10.org.openstack:dead", "iqn.2010-10.org.openstack:live"],
                     target_luns=[3, 7])
    result = attach.attach_volume(host, registry, guest, info, bus="scsi")
    assert result.portal == portal
    disk = live_disks(host, guest)["sda"]
    assert disk.source_name == "iqn.2010-10.org.openstack:live/7"
    assert host.find_secret("iscsi", "iqn.2010-10.org.openstack:live/7") is not None


def test_domain_missing(host, registry, make_info):
    with pytest.raises(exception.DomainNotFound) as err:
        attach.attach_volume(host, registry, "no-such-domain", make_info())
    assert "domain missing" in str(err.value) and err.value.exit_code == 1


def test_shut_off_domain_needs_persistent(host, registry, make_guest, make_info):
    name = make_guest(persistent=True, running=False)
    with pytest.raises(exception.DomainNotRunning):
        attach.attach_volume(host, registry, name, make_info(), bus="scsi")
    assert secret_uuids(host) == set()
    result = attach.attach_volume(host, registry, name, make_info(), bus="scsi",
                                  persistent=True)
    assert result.dev in guest_disks.target_devs(host.domain_xml(name, inactive=True))


def test_persistent_flag_on_transient_domain_is_bad_input(host, registry, guest, make_info):
    with pytest.raises(exception.InvalidInput) as err:
        attach.attach_volume(host, registry, guest, make_info(), persistent=True)
    assert err.value.exit_code == 2


def test_persistent_attach_and_detach_both_places(host, registry, make_guest, make_info):
    name = make_guest(persistent=True)
    info = make_info()
    result = attach.attach_volume(host, registry, name, copy.deepcopy(info), bus="scsi",
                                  persistent=True)
    assert result.dev in guest_disks.target_devs(host.domain_xml(name))
    assert result.dev in guest_disks.target_devs(host.domain_xml(name, inactive=True))
    detached = attach.detach_volume(host, registry, name, connection_info=info)
    assert (detached.live, detached.persistent) == (True, True)
    assert guest_disks.target_devs(host.domain_xml(name, inactive=True)) == set()
    assert secret_uuids(host) == set()


def test_detach_removes_disk_and_secret(host, registry, guest, make_info):
    info = make_info()
    attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi")
    result = attach.detach_volume(host, registry, guest, connection_info=info)
    assert result.to_dict() == {"domain": guest, "dev": "sda",
                                "driver": "hvplug.virt.volume.net.LibvirtNetVolumeDriver",
                                "live": True, "persistent": False, "layer": "the source"}
    assert live_disks(host, guest) == {} and secret_uuids(host) == set()


def test_detach_by_dev(host, registry, guest, make_info):
    attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    attach.detach_volume(host, registry, guest, dev="sda")
    assert live_disks(host, guest) == {} and secret_uuids(host) == set()


def test_detach_not_attached_changes_nothing(host, registry, guest, make_info):
    attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    before = (secret_uuids(host), set(live_disks(host, guest)))
    with pytest.raises(exception.VolumeNotAttached) as err:
        attach.detach_volume(host, registry, guest, connection_info=make_info())
    assert "is not attached" in str(err.value) and "nothing was changed" in str(err.value)
    with pytest.raises(exception.VolumeNotAttached):
        attach.detach_volume(host, registry, guest, dev="sdq")
    assert (secret_uuids(host), set(live_disks(host, guest))) == before


def test_detach_needs_info_or_dev(host, registry, guest):
    with pytest.raises(exception.InvalidInput):
        attach.detach_volume(host, registry, guest)


def test_detach_disk_no_driver_handles(host, registry, guest, tmp_path):
    xml = (f"<disk type='file' device='disk'><source file='{tmp_path}/x.img'/>"
           "<target dev='sdb' bus='scsi'/></disk>")
    (tmp_path / "x.img").write_bytes(b"\0" * 4096)
    host.attach_device(guest, DeviceXML(xml))
    with pytest.raises(exception.InvalidInput) as err:
        attach.detach_volume(host, registry, guest, dev="sdb")
    assert "virsh detach-disk" in str(err.value)


def test_secret_shared_by_two_domains_kept_until_last_detach(host, registry, make_guest,
                                                             make_info):
    first, second = make_guest(), make_guest()
    info = make_info(multiattach=True)
    one = attach.attach_volume(host, registry, first, copy.deepcopy(info), bus="scsi")
    two = attach.attach_volume(host, registry, second, copy.deepcopy(info), bus="scsi")
    assert one.secret_uuid == two.secret_uuid
    attach.detach_volume(host, registry, first, connection_info=copy.deepcopy(info))
    assert secret_uuids(host) == {one.secret_uuid}
    attach.detach_volume(host, registry, second, connection_info=copy.deepcopy(info))
    assert secret_uuids(host) == set()


def test_wrong_password_cannot_overwrite_a_shared_secret(host, registry, make_guest,
                                                         make_info, fake_execute, fake_libvirt):
    first, second = make_guest(), make_guest()
    info = make_info(multiattach=True, password="right-pw")
    one = attach.attach_volume(host, registry, first, copy.deepcopy(info), bus="scsi")
    assert fake_execute.calls == []  # nobody else used the secret: no extra login
    fake_execute.fail_with = ("qemu-img: Could not open 'driver=iscsi,...': iSCSI: Failed to "
                              "connect to LUN : Failed to log in to target. Status: "
                              "Authentication failure(513)")
    wrong = copy.deepcopy(info)
    wrong["data"]["auth_password"] = "wrong-pw"
    with pytest.raises(exception.AuthenticationFailed):
        attach.attach_volume(host, registry, second, wrong, bus="scsi")
    state = fake_libvirt._hosts["qemu:///system"].secrets[one.secret_uuid]
    assert state.value == b"right-pw"
    (cmd,) = fake_execute.calls
    assert cmd[:2] == ("qemu-img", "info") and "wrong-pw" not in " ".join(cmd)
    assert list(fake_execute.files.values()) == [("wrong-pw", 0o600)]
    assert not any(os.path.exists(path) for path in fake_execute.files)
    assert live_disks(host, second) == {}


def test_changed_password_takes_effect(host, registry, guest, make_info, fake_libvirt):
    seen = []
    fake_libvirt.set_iscsi_login(lambda *args: seen.append(args[5]))
    info = make_info(password="old-password")
    attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi")
    attach.detach_volume(host, registry, guest, dev="sda")
    other = make_info(password="new-password")
    other["data"]["target_iqn"] = info["data"]["target_iqn"]
    other["data"]["auth_username"] = info["data"]["auth_username"]
    attach.attach_volume(host, registry, guest, other, bus="scsi")
    assert seen == ["old-password", "new-password"]


def test_detach_timeout(host, registry, guest, make_info, fake_libvirt, config_fixture):
    config_fixture.config(group="libvirt", device_detach_timeout=0.05)
    attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    fake_libvirt.hold_detach(guest)
    with pytest.raises(exception.DeviceDetachTimeout) as err:
        attach.detach_volume(host, registry, guest, dev="sda")
    assert "sda" in str(err.value) and "0.05" in str(err.value)


@pytest.mark.parametrize(("info", "reason"), [
    ([], "must be a JSON object"),
    ({"data": {}}, "driver_volume_type is missing"),
    ({"driver_volume_type": "iscsi"}, "data is missing"),
    ({"driver_volume_type": "iscsi", "data": {"target_portal": "h:1", "target_lun": 1}},
     "data.target_iqn is missing"),
    ({"driver_volume_type": "iscsi", "data": {"target_portal": "h:1", "target_iqn": "iqn.i",
                                              "target_lun": "one"}}, "integer from 0"),
    ({"driver_volume_type": "iscsi", "data": {"target_portal": "h:1", "target_iqn": "iqn.i",
                                              "target_lun": 1, "auth_method": "CHAP",
                                              "auth_username": "u"}},
     "data.auth_password is missing"),
    ({"driver_volume_type": "iscsi", "data": {"target_portal": "h:1", "target_iqn": "iqn.i",
                                              "target_lun": 1, "auth_method": "kerberos"}},
     "not supported"),
    ({"driver_volume_type": "iscsi", "data": {"target_portal": "h:1", "target_iqn": "iqn.i",
                                              "target_lun": 1, "target_portals": ["a:1"],
                                              "target_iqns": ["iqn.x", "iqn.y"]}},
     "lists of one length"),
])
def test_bad_connection_info(host, registry, guest, info, reason):
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        attach.attach_volume(host, registry, guest, info)
    assert reason in str(err.value) and err.value.exit_code == 2


def test_render_is_valid_and_consistent(registry, make_info):
    info = make_info(qos_specs={"total_bytes_sec": "1048576"}, access_mode="ro")
    original = copy.deepcopy(info)
    driver, disk_xml, secret_xml = attach.render_volume(registry, info, bus="scsi")
    assert isinstance(driver, LibvirtNetVolumeDriver)
    assert_valid_disk(disk_xml)
    assert_valid_secret(secret_xml)
    uuid = config.LibvirtConfigSecret.from_xml(secret_xml).uuid
    assert uuid and f"uuid=\"{uuid}\"" in disk_xml
    assert info == original  # nothing written into the caller's document
    assert "s3cret-pw" not in disk_xml + secret_xml
    assert "<readonly/>" in disk_xml and "1048576" in disk_xml
    _, plain_xml, none = attach.render_volume(registry, make_info(chap=False), dev="vdc")
    assert none is None and "<auth" not in plain_xml and "vdc" in plain_xml


def test_tgtd_target_not_found_names_initiator_and_acl(host, registry, guest, make_info,
                                                       fake_libvirt):
    def login(*args):  # what tgtd answers an initiator its ACL refuses
        raise RuntimeError("iSCSI: Failed to connect to LUN : Failed to log in to target. "
                           "Status: Target not found(515)")
    fake_libvirt.set_iscsi_login(login)
    with pytest.raises(exception.TargetNotFound) as err:
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    assert HOST_IQN in str(err.value) and "ACL" in str(err.value)
    assert secret_uuids(host) == set()


def test_the_preflight_probe_runs_once_and_its_target_is_used(host, registry, guest, make_info,
                                                              monkeypatch):
    """The attach probes the portal once, in its preflight, before it
    touches the domain; connect_volume uses that target without probing
    again."""
    calls = []
    select = LibvirtNetVolumeDriver.select_target

    def counting(self, info):
        calls.append(len(live_disks(host, guest)))  # disks at probe time
        return select(self, info)

    monkeypatch.setattr(LibvirtNetVolumeDriver, "select_target", counting)
    result = attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    assert calls == [0] and result.portal


def test_a_failing_preflight_changes_nothing(host, registry, guest, make_info, monkeypatch):
    def unreachable(self, info):
        raise exception.TargetUnreachable(portals="192.0.2.1:3260", timeout=0.01)

    monkeypatch.setattr(LibvirtNetVolumeDriver, "select_target", unreachable)
    before = secret_uuids(host)
    with pytest.raises(exception.TargetUnreachable):
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    assert live_disks(host, guest) == {} and secret_uuids(host) == before


def test_a_driver_without_a_preflight_starts_no_thread(make_info):
    class Plain(LibvirtNetVolumeDriver.__mro__[1]):  # the base driver
        pass

    preflight = attach.Preflight(Plain(host=None), make_info())
    assert preflight._thread is None and preflight.result() is None


def test_a_rollback_that_fails_is_reported_not_hidden(host, registry, guest, make_info,
                                                      fake_libvirt, monkeypatch):
    """The attach fails, and so does removing its secret: the error says
    what is left and how to remove it, instead of 'Nothing was left behind'."""
    def login(*args):
        raise RuntimeError("iSCSI: Failed to connect to LUN : something else")
    fake_libvirt.set_iscsi_login(login)

    def disconnect(self, info, domain):
        raise exception.LibvirtError(action="undefine the secret", reason="libvirtd went away")
    monkeypatch.setattr(LibvirtNetVolumeDriver, "disconnect_volume", disconnect)
    with pytest.raises(exception.RollbackIncomplete) as err:
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    message = err.value.message
    assert "something else" in message and "Nothing was left behind" not in message
    assert "libvirtd went away" in message and "hvplug reconcile" in message
    assert f"--domain {guest} --dev sda" in message
    assert isinstance(err.value.__cause__, exception.AttachFailed)
    assert err.value.exit_code == exception.EXIT_FAILED
    for uuid in secret_uuids(host):  # what the failed rollback left, for this test only
        host.delete_secret(uuid)


def test_a_clean_rollback_still_says_nothing_was_left(host, registry, guest, make_info,
                                                      fake_libvirt):
    def login(*args):
        raise RuntimeError("iSCSI: Failed to connect to LUN : something else")
    fake_libvirt.set_iscsi_login(login)
    with pytest.raises(exception.AttachFailed, match="Nothing was left behind"):
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi")


def config_disks(host, domain):
    return {d.target_dev: d for d in guest_disks.disks(host.domain_xml(domain, inactive=True))}


def test_config_only_attach_and_detach_leave_the_running_domain_alone(
        host, registry, make_guest, make_info):
    guest = make_guest(persistent=True)
    info = make_info()
    result = attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi",
                                  config_only=True)
    assert (result.live, result.persistent, result.promoted) == (False, True, False)
    assert live_disks(host, guest) == {} and list(config_disks(host, guest)) == ["sda"]
    secret = config_disks(host, guest)["sda"].auth_secret_uuid
    assert secret == result.secret_uuid and host.secret_exists(secret)
    attach.detach_volume(host, registry, guest, copy.deepcopy(info), config_only=True)
    assert config_disks(host, guest) == {} and not host.secret_exists(secret)

    # Attached live and persistent: --config-only detach takes it out of the
    # config only, and the secret stays while the running domain uses it.
    secret = attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi",
                                  persistent=True).secret_uuid
    assert list(live_disks(host, guest)) == ["sda"]
    detached = attach.detach_volume(host, registry, guest, copy.deepcopy(info),
                                    config_only=True)
    assert (detached.live, detached.persistent) == (False, True)
    assert config_disks(host, guest) == {} and list(live_disks(host, guest)) == ["sda"]
    assert host.secret_exists(secret)
    with pytest.raises(exception.VolumeNotAttached, match="persistent configuration only"):
        attach.detach_volume(host, registry, guest, copy.deepcopy(info), config_only=True)
    attach.detach_volume(host, registry, guest, copy.deepcopy(info))
    assert not host.secret_exists(secret)


def test_config_only_on_a_transient_domain_is_bad_input(host, registry, guest, make_info):
    with pytest.raises(exception.InvalidInput, match="transient.*--config-only") as err:
        attach.attach_volume(host, registry, guest, make_info(), config_only=True)
    assert err.value.exit_code == 2 and secret_uuids(host) == set()
    with pytest.raises(exception.InvalidInput, match="--config-only"):
        attach.detach_volume(host, registry, guest, dev="sda", config_only=True)


def test_lun_passthrough_is_a_scsi_lun_device(host, registry, guest, make_info, config_fixture):
    result = attach.attach_volume(host, registry, guest, make_info(), bus="scsi", device="lun")
    disk = live_disks(host, guest)[result.dev]
    assert (disk.source_device, disk.source_type, disk.target_bus) == ("lun", "network", "scsi")
    assert disk.auth_secret_uuid == result.secret_uuid
    attach.detach_volume(host, registry, guest, dev=result.dev)
    config_fixture.config(group="libvirt", disk_device="lun", disk_bus="scsi")
    assert attach.render_volume(registry, make_info())[1].startswith(
        '<disk type="network" device="lun">')


@pytest.mark.parametrize("bus", ["virtio", "sata"])
def test_lun_passthrough_needs_bus_scsi(host, registry, guest, make_info, bus):
    with pytest.raises(exception.InvalidInput, match="needs bus scsi") as err:
        attach.attach_volume(host, registry, guest, make_info(), bus=bus, device="lun")
    assert err.value.exit_code == 2 and secret_uuids(host) == set()
