"""The login probe before attach (net.LibvirtNetVolumeDriver.select_target) and in
verify, on the fake libvirt with fake iSCSI targets on 127.0.0.1."""

import pytest

from hvplug import exception
from hvplug.virt import attach, guest_disks, inspect
from tests.fakeiscsitarget import FakeISCSITarget


@pytest.fixture
def short_probe(config_fixture):
    config_fixture.config(group="libvirt", iscsi_login_probe_timeout=0.2)


def nothing_made(host, guest) -> bool:
    secrets = host.call(lambda conn: conn.listAllSecrets(0))
    return not secrets and not guest_disks.target_devs(host.domain_xml(guest))


def test_a_silent_target_fails_before_the_domain_is_touched(host, registry, guest, make_info,
                                                             iscsi_target, short_probe,
                                                             fake_libvirt):
    iscsi_target.mode = "silent"
    logins = []
    fake_libvirt.set_iscsi_login(lambda *args: logins.append(args))
    info = make_info()
    with pytest.raises(exception.TargetNotAnswering) as err:
        attach.attach_volume(host, registry, guest, info, bus="scsi")
    message = str(err.value)
    assert err.value.exit_code == 1
    assert f"portal {iscsi_target.portal} accepted a TCP connection" in message
    assert info["data"]["target_iqn"] + "/1" in message
    assert "within 0.2 s" in message and "iscsi_login_probe_timeout" in message
    assert info["data"]["auth_password"] not in message
    assert nothing_made(host, guest) and logins == []


def test_a_silent_portal_falls_through_to_the_next(host, registry, guest, make_info,
                                                    iscsi_target, short_probe):
    with FakeISCSITarget("silent") as silent:
        info = make_info(target_portal=silent.portal,
                         target_portals=[silent.portal, iscsi_target.portal])
        result = attach.attach_volume(host, registry, guest, info, bus="scsi")
    assert result.portal == iscsi_target.portal


def test_only_silent_and_dead_portals(host, registry, guest, make_info, iscsi_target,
                                      dead_portal, short_probe):
    iscsi_target.mode = "close"
    info = make_info(target_portal=dead_portal,
                     target_portals=[dead_portal, iscsi_target.portal])
    with pytest.raises(exception.TargetNotAnswering) as err:
        attach.attach_volume(host, registry, guest, info, bus="scsi")
    assert f"portal {iscsi_target.portal} accepted" in str(err.value)
    assert "closed the connection" in str(err.value)
    assert nothing_made(host, guest)


@pytest.mark.parametrize(("mode", "error"), [
    ("not_found", exception.TargetNotFound),
    ("authz", exception.AuthorizationFailed),
])
def test_refusals_before_attach(host, registry, guest, make_info, iscsi_target, mode, error):
    iscsi_target.mode = mode
    with pytest.raises(error) as err:
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    assert err.value.exit_code == 1 and iscsi_target.portal in str(err.value)
    assert nothing_made(host, guest)


def test_chap_target_without_credentials(host, registry, guest, make_info, iscsi_target):
    iscsi_target.mode = "chap"
    with pytest.raises(exception.TargetRequiresChap) as err:
        attach.attach_volume(host, registry, guest, make_info(chap=False), bus="scsi")
    assert "requires CHAP authentication" in str(err.value)
    assert nothing_made(host, guest)
    # With credentials the probe's answer is enough: QEMU does the CHAP login.
    result = attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    assert result.secret_uuid
    assert not [k for login in iscsi_target.logins for k in login if k.startswith("CHAP_")]


def test_a_refusing_first_portal_falls_through(host, registry, guest, make_info,
                                               iscsi_target):
    with FakeISCSITarget("not_found") as refusing:
        info = make_info(target_portal=refusing.portal,
                         target_portals=[refusing.portal, iscsi_target.portal])
        assert attach.attach_volume(host, registry, guest, info,
                                    bus="scsi").portal == iscsi_target.portal


def test_zero_turns_the_login_probe_off(host, registry, guest, make_info, iscsi_target,
                                        config_fixture):
    iscsi_target.mode = "silent"
    config_fixture.config(group="libvirt", iscsi_login_probe_timeout=0)
    assert attach.attach_volume(host, registry, guest, make_info(), bus="scsi").dev == "sda"
    (checked,) = inspect.verify_volumes(host, guest)
    assert [c["check"] for c in checked["checks"]] == ["secret", "portal"]


def checks(host, guest) -> dict:
    (checked,) = inspect.verify_volumes(host, guest)
    return {c["check"]: c for c in checked["checks"]}


def test_verify_reports_target_and_lun(host, registry, guest, make_info, iscsi_target):
    attach.attach_volume(host, registry, guest, make_info(chap=False), bus="scsi")
    found = checks(host, guest)
    assert list(found) == ["portal", "target", "lun"]
    assert all(c["ok"] for c in found.values())
    assert found["lun"]["detail"] == "LUN 1 exists (REPORT LUNS)"

    iscsi_target.luns = (0, 2)
    found = checks(host, guest)
    assert not found["lun"]["ok"] and "REPORT LUNS lists 0, 2" in found["lun"]["detail"]

    iscsi_target.mode = "not_found"
    found = checks(host, guest)
    assert not found["target"]["ok"] and "Target not found" in found["target"]["detail"]
    assert "lun" not in found


def test_verify_of_a_chap_target_leaves_the_lun_unchecked(host, registry, guest, make_info,
                                                           iscsi_target, short_probe):
    iscsi_target.mode = "chap"
    attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    found = checks(host, guest)
    assert list(found) == ["secret", "portal", "target"] and found["target"]["ok"]
    assert "CHAP required; LUN 1 not checked without the password" in found["target"]["detail"]

    iscsi_target.mode = "silent"
    found = checks(host, guest)
    assert found["portal"]["ok"] and not found["target"]["ok"]
    assert "did not answer an iSCSI login within 0.2 s" in found["target"]["detail"]
