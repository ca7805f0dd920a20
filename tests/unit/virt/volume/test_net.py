import pytest

from hvplug import exception
from hvplug.virt import attach, config
from hvplug.virt.volume import net
from tests.xmlcheck import assert_golden, assert_valid_disk

INFO = {"driver_volume_type": "iscsi",
        "data": {"target_portal": "[2001:db8::10]:3260",
                 "target_iqn": "iqn.2010-10.org.openstack:volume-42", "target_lun": "2",
                 "auth_method": "CHAP", "auth_username": "chapuser",
                 "auth_password": "chap-password", "volume_id": "42",
                 "secret_uuid": "6bd2c9a4-3f4e-4a4c-9a36-0d6f1c3c2a11"},
        "serial": "42"}


def test_iscsi_targets_pairs_portals_iqns_and_luns():
    data = {"target_portal": "192.0.2.1", "target_iqn": "iqn.a", "target_lun": 1,
            "target_portals": ["192.0.2.1:3260", "[2001:db8::1]:3261"],
            "target_iqns": ["iqn.a", "iqn.b"], "target_luns": [1, "4"]}
    assert net.iscsi_targets(data) == [
        net.ISCSITarget("192.0.2.1", 3260, "iqn.a", 1),
        net.ISCSITarget("2001:db8::1", 3261, "iqn.b", 4)]
    assert net.iscsi_targets(data)[1].portal == "[2001:db8::1]:3261"


def test_portals_without_iqns_share_the_primary_iqn():
    data = {"target_portal": "192.0.2.1:3260", "target_iqn": "iqn.a", "target_lun": 3,
            "target_portals": ["192.0.2.2:3260"]}
    assert [t.source_name for t in net.iscsi_targets(data)] == ["iqn.a/3", "iqn.a/3"]


@pytest.mark.parametrize(("method", "expected"), [(None, None), ("None", None),
                                              ("chap", ("u", "p")), ("CHAP", ("u", "p"))])
def test_chap_credentials(method, expected):
    assert net.chap_credentials({"auth_method": method, "auth_username": "u",
                                 "auth_password": "p"}) == expected


def test_initiator_name_from_file(tmp_path, config_fixture):
    path = tmp_path / "initiatorname.iscsi"
    path.write_text("## comment\nInitiatorName=iqn.1993-08.org.debian:01:abc\n")
    config_fixture.config(group="libvirt", iscsi_initiator_file=str(path))
    assert net.initiator_name() == "iqn.1993-08.org.debian:01:abc"
    config_fixture.config(group="libvirt", iscsi_initiator_name="iqn.2000-01.com.example:h")
    assert net.initiator_name() == "iqn.2000-01.com.example:h"


@pytest.mark.parametrize("name", ["bad name", "volume-1", "iqn.a\x1bb"])
def test_a_malformed_initiator_name_option_is_a_configuration_error(config_fixture, name):
    config_fixture.config(group="libvirt", iscsi_initiator_name=name)
    with pytest.raises(exception.ConfigFileError) as err:
        net.initiator_name()
    assert "[libvirt] iscsi_initiator_name" in err.value.message
    assert err.value.exit_code == exception.EXIT_BAD_INPUT


@pytest.mark.parametrize("content", [None, "# nothing here\n", "InitiatorName=\n",
                                     "InitiatorName=not an iqn\n"])
def test_initiator_name_missing(tmp_path, config_fixture, content):
    path = tmp_path / "initiatorname.iscsi"
    if content is not None:
        path.write_text(content)
    config_fixture.config(group="libvirt", iscsi_initiator_file=str(path))
    with pytest.raises(exception.InitiatorNameNotFound) as err:
        net.initiator_name()
    assert str(path) in str(err.value) and "iscsi_initiator_name" in str(err.value)


def test_get_config_golden(config_fixture):
    config_fixture.config(group="libvirt", iscsi_initiator_name="iqn.1993-08.org.debian:01:unit")
    driver = net.LibvirtNetVolumeDriver(host=None)
    xml = driver.get_config(driver.connection_of(INFO), {"dev": "sdb", "bus": "scsi"}).to_xml()
    assert_valid_disk(xml)
    assert_golden(xml, "virt/net_driver_iscsi_ipv6_chap.xml")
    assert "chap-password" not in xml


def test_connection_info_from_disk_round_trip(config_fixture):
    config_fixture.config(group="libvirt", iscsi_initiator_name="iqn.1993-08.org.debian:01:unit")
    driver = net.LibvirtNetVolumeDriver(host=None)
    disk = config.LibvirtConfigGuestDisk.from_xml(
        driver.get_config(driver.connection_of(INFO), {"dev": "sdb", "bus": "scsi"}).to_xml())
    assert driver.handles_disk(disk) and driver.is_same_volume(disk, INFO)
    rebuilt = driver.connection_info_from_disk(disk)
    assert rebuilt["data"] == {"target_iqn": "iqn.2010-10.org.openstack:volume-42",
                               "target_lun": 2, "target_portal": "[2001:db8::10]:3260",
                               "auth_method": "CHAP", "auth_username": "chapuser",
                               "secret_uuid": INFO["data"]["secret_uuid"]}


def test_extend_volume_tells_qemu(host, registry, guest, make_info, fake_libvirt):
    info = make_info()
    result = attach.attach_volume(host, registry, guest, info, bus="scsi")
    fake_libvirt.set_lun_size(info["data"]["target_iqn"], 1, 3 << 30)
    driver = registry.driver_for(info)
    assert driver.extend_volume(info, guest, result.dev, 3 << 30) == 3 << 30
    assert host.block_capacity(guest, result.dev) == 3 << 30
