"""Tests of hvplug.virt.config: golden files, schema validity, round trips."""

import tempfile
from pathlib import Path

import pytest
from lxml import etree

from hvplug import exception
from hvplug.virt import config
from tests import xmlcheck

UUID = "cad6dbd0-642e-4178-b093-dd4e73c4d422"
IQN = "iqn.2010-10.org.openstack:volume-00000001"
HOST_IQN = "iqn.1993-08.org.debian:01:be77dc1c3c7b"


def disk_file() -> config.LibvirtConfigGuestDisk:
    return config.LibvirtConfigGuestDisk(
        driver_name="qemu", driver_format="qcow2", driver_cache="writeback",
        driver_io="threads", driver_discard="unmap",
        source_path="/var/lib/hvplug/images/volume-1.qcow2",
        target_dev="vdb", target_bus="virtio", readonly=True, serial="volume-1")


def disk_block() -> config.LibvirtConfigGuestDisk:
    return config.LibvirtConfigGuestDisk(
        source_type="block", source_device="lun",
        driver_name="qemu", driver_format="raw", driver_cache="none",
        driver_io="native",
        source_path=f"/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-{IQN}-lun-1",
        target_dev="sdb", target_bus="scsi", shareable=True, serial="volume-2")


def disk_network_iscsi_chap() -> config.LibvirtConfigGuestDisk:
    return config.LibvirtConfigGuestDisk(
        source_type="network", driver_name="qemu", driver_format="raw",
        driver_cache="none", source_protocol="iscsi", source_name=f"{IQN}/1",
        source_hosts=[("[::1]", 3260)], source_initiator_iqn=HOST_IQN,
        auth_username="u1", auth_secret_type="iscsi", auth_secret_uuid=UUID,
        target_dev="sda", target_bus="scsi", serial="volume-3")


def disk_network_iscsi_lun() -> config.LibvirtConfigGuestDisk:
    """The LUN passed through (``--device lun``): no serial, bus scsi."""
    return config.LibvirtConfigGuestDisk(
        source_type="network", source_device="lun", driver_name="qemu",
        driver_format="raw", driver_cache="none", source_protocol="iscsi",
        source_name=f"{IQN}/2", source_hosts=[("192.0.2.10", 3260)],
        source_initiator_iqn=HOST_IQN, auth_username="u1", auth_secret_type="iscsi",
        auth_secret_uuid=UUID, target_dev="sdb", target_bus="scsi")


def disk_network_rbd() -> config.LibvirtConfigGuestDisk:
    disk = config.LibvirtConfigGuestDisk(
        source_type="network", driver_name="qemu", driver_format="raw",
        source_protocol="rbd", source_name="volumes/volume-4",
        source_hosts=[("192.0.2.1", "6789"), ("2001:db8::2", 6789),
                      ("mon3.example.org", None)],
        auth_username="cinder", auth_secret_type="ceph",
        auth_secret_usage="client.cinder secret",
        target_dev="vdc", target_bus="virtio")
    disk.set_qos_specs({"read_bytes_sec": "2048000", "write_bytes_sec": 1024000,
                        "total_iops_sec": "500"})
    return disk


def disk_iotune() -> config.LibvirtConfigGuestDisk:
    disk = config.LibvirtConfigGuestDisk(
        source_type="block", driver_name="qemu", driver_format="raw",
        source_path="/dev/sdc", target_dev="vdd", target_bus="virtio")
    disk.set_qos_specs({"total_bytes_sec": "10485760", "read_iops_sec": "200",
                        "write_iops_sec": 100, "size_iops_sec": "4096",
                        "total_bytes_sec_max": "20971520", "total_bytes_sec_max_length": 10,
                        "read_iops_sec_max": 400, "read_iops_sec_max_length": "5",
                        "write_iops_sec_max": 300, "write_iops_sec_max_length": 3,
                        "consumer": "front-end"})
    return disk


def disk_burst_blockio() -> config.LibvirtConfigGuestDisk:
    """The other half of the iotune keys (read/write bytes, total iops), and
    a 4K-sector volume's <blockio>."""
    disk = config.LibvirtConfigGuestDisk(
        source_type="block", driver_name="qemu", driver_format="raw",
        source_path="/dev/sdd", target_dev="vde", target_bus="virtio",
        logical_block_size=4096, physical_block_size=4096)
    disk.set_qos_specs({"read_bytes_sec": 1048576, "read_bytes_sec_max": 2097152,
                        "read_bytes_sec_max_length": 2, "write_bytes_sec": 524288,
                        "write_bytes_sec_max": 1048576, "write_bytes_sec_max_length": 4,
                        "total_iops_sec": 1000, "total_iops_sec_max": 2000,
                        "total_iops_sec_max_length": 60})
    return disk


def disk_network_iscsi_luks() -> config.LibvirtConfigGuestDisk:
    """A LUKS volume QEMU decrypts (with CHAP): <encryption> inside <source>."""
    disk = disk_network_iscsi_chap()
    disk.source_name, disk.target_dev, disk.serial = f"{IQN}/2", "sdb", "volume-6"
    disk.encryption_format, disk.encryption_secret_type = "luks", "passphrase"
    disk.encryption_secret_uuid = "5f2d3e3a-58c2-4a3b-9d43-0c4a6c1b7e21"
    return disk


def disk_block_luks() -> config.LibvirtConfigGuestDisk:
    """A host-attached LUKS volume whose passphrase secret is named by usage."""
    disk = config.LibvirtConfigGuestDisk(source_type="block", target_dev="vdf",
                                         target_bus="virtio",
                                         source_path="/dev/mapper/mpath-volume-7")
    disk.encryption_format, disk.encryption_secret_type = "luks", "passphrase"
    disk.encryption_secret_usage = disk.serial = "volume-7"
    return disk


def secret_iscsi() -> config.LibvirtConfigSecret:
    return config.LibvirtConfigSecret(
        private=True, uuid=UUID, description="CHAP secret of volume-3",
        usage_type="iscsi", usage_id=f"{IQN}-lun-1")


def secret_ceph() -> config.LibvirtConfigSecret:
    return config.LibvirtConfigSecret(
        private=True, usage_type="ceph", usage_id="client.cinder secret")


def secret_volume() -> config.LibvirtConfigSecret:
    return config.LibvirtConfigSecret(
        ephemeral=True, description="LUKS passphrase",
        usage_type="volume", usage_id="/var/lib/hvplug/images/volume-5.img")


DISKS = [disk_file, disk_block, disk_network_iscsi_chap, disk_network_iscsi_lun,
         disk_network_rbd,
         disk_iotune, disk_burst_blockio, disk_network_iscsi_luks, disk_block_luks]
SECRETS = [secret_iscsi, secret_ceph, secret_volume]
VALIDATORS = {
    config.LibvirtConfigGuestDisk: xmlcheck.assert_valid_disk,
    config.LibvirtConfigSecret: xmlcheck.assert_valid_secret,
}

LIVE_DISK = f"""
<disk type='network' device='disk'>
  <driver name='qemu' type='raw' cache='none'/>
  <source protocol='iscsi' name='iqn.2010-10.org.openstack:volume-probe/1' index='1'>
    <host name='127.0.0.1' port='3260'/>
    <initiator><iqn name='{HOST_IQN}'/></initiator>
    <auth username='u1'><secret type='iscsi' uuid='{UUID}'/></auth>
  </source>
  <target dev='sda' bus='scsi'/>
  <serial>probe</serial>
  <alias name='scsi0-0-0-0'/>
  <address type='drive' controller='0' bus='0' target='0' unit='0'/>
</disk>
"""

LEGACY_AUTH_DISK = f"""
<disk type='network' device='disk'>
  <auth username='u1'><secret type='iscsi' usage='volume-3-chap'/></auth>
  <source protocol='iscsi' name='{IQN}/1'><host name='192.0.2.10'/></source>
  <target dev='sda' bus='scsi'/>
</disk>
"""


def generate(obj: config.LibvirtConfigObject) -> str:
    """The object's XML, after checking it against libvirt's schema."""
    xml = obj.to_xml()
    VALIDATORS[type(obj)](xml)
    return xml


def round_trip(obj: config.LibvirtConfigObject) -> config.LibvirtConfigObject:
    """parse(format(obj)), checking that a second pass changes nothing."""
    xml = generate(obj)
    first = type(obj).from_xml(xml)
    second = type(obj).from_xml(generate(first))
    assert first == second
    assert generate(second) == xml
    return first


@pytest.mark.parametrize("build", DISKS + SECRETS, ids=lambda f: f.__name__)
def test_matches_golden_file(build):
    xmlcheck.assert_golden(generate(build()), f"virt/{build.__name__}.xml")


@pytest.mark.parametrize("build", DISKS + SECRETS, ids=lambda f: f.__name__)
def test_golden_file_parses_back(build):
    obj = build()
    golden = (xmlcheck.DATA_DIR / "virt" / f"{build.__name__}.xml").read_text()
    assert type(obj).from_xml(golden) == round_trip(obj)


@pytest.mark.parametrize("build", DISKS + SECRETS, ids=lambda f: f.__name__)
def test_round_trip_keeps_every_value(build):
    obj = build()
    parsed = round_trip(obj)
    for name, value in obj.values().items():
        if name != "source_hosts":  # normalised, checked below
            assert getattr(parsed, name) == value, name


@pytest.mark.parametrize("build", DISKS, ids=lambda f: f.__name__)
def test_libvirt_reads_the_disk_as_written(build):
    """libvirt's own parser (the in-memory test driver) keeps every value."""
    libvirt = pytest.importorskip("libvirt")
    domain = etree.fromstring(xmlcheck.MINIMAL_DOMAIN)
    domain.find("devices").append(build().format_dom())
    conn = libvirt.open("test:///default")
    try:
        defined = conn.defineXML(etree.tostring(domain, encoding="unicode"))
        echoed = etree.fromstring(defined.XMLDesc()).find("devices/disk")
        defined.undefine()
    finally:
        conn.close()
    parsed = config.LibvirtConfigGuestDisk()
    parsed.parse_dom(echoed)
    assert parsed == round_trip(build())


def test_hosts_come_back_bare_with_string_ports():
    assert round_trip(disk_network_iscsi_chap()).source_hosts == [("::1", "3260")]
    assert round_trip(disk_network_rbd()).source_hosts == [
        ("192.0.2.1", "6789"), ("2001:db8::2", "6789"),
        ("mon3.example.org", None)]


def test_config_objects_compare_by_value_and_are_not_hashable():
    assert disk_file() == disk_file() and disk_file() != disk_block()
    for obj in (disk_file(), config.LibvirtConfigSecret()):
        with pytest.raises(TypeError, match="unhashable"):
            hash(obj)


def test_ipv6_host_is_written_without_brackets():
    xml = generate(disk_network_iscsi_chap())
    assert "name=\"::1\"" in xml and "[" not in xml


def test_every_declared_property_is_exercised():
    fixtures = [round_trip(build()) for build in DISKS + SECRETS]
    for cls in VALIDATORS:
        objs = [obj for obj in fixtures if type(obj) is cls]
        unused = [prop.name for prop in cls.xml_properties()
                  if all(getattr(obj, prop.name) == prop.make_default()
                         for obj in objs)]
        assert not unused, f"{cls.__name__}: no fixture sets {unused}"


def test_iotune_keys_are_the_iotune_properties():
    declared = [prop.name for prop in config.LibvirtConfigGuestDisk.xml_properties()
                if isinstance(prop.path, str) and prop.path.startswith("./iotune/")]
    assert declared == list(config.IOTUNE_KEYS)


def test_empty_groups_are_left_out():
    xml = generate(config.LibvirtConfigGuestDisk(source_path="/tmp/x.img",
                                                 target_dev="vda"))
    for tag in ("<driver", "<iotune", "<auth", "<readonly", "<serial", "<host"):
        assert tag not in xml


def test_live_libvirt_xml_parses():
    disk = config.LibvirtConfigGuestDisk.from_xml(LIVE_DISK)
    assert disk.values() == disk_values(
        source_type="network", driver_name="qemu", driver_format="raw",
        driver_cache="none", source_protocol="iscsi",
        source_name="iqn.2010-10.org.openstack:volume-probe/1",
        source_hosts=[("127.0.0.1", "3260")], source_initiator_iqn=HOST_IQN,
        auth_username="u1", auth_secret_type="iscsi", auth_secret_uuid=UUID,
        target_dev="sda", target_bus="scsi", serial="probe")
    xml = generate(disk)
    assert "index=" not in xml and "<alias" not in xml and "<address" not in xml


def disk_values(**values) -> dict:
    return config.LibvirtConfigGuestDisk(**values).values()


def test_legacy_auth_is_read_and_rewritten_inside_source():
    disk = config.LibvirtConfigGuestDisk.from_xml(LEGACY_AUTH_DISK)
    assert (disk.auth_username, disk.auth_secret_type, disk.auth_secret_usage) == (
        "u1", "iscsi", "volume-3-chap")
    root = disk.format_dom()
    assert root.find("auth") is None
    assert root.find("source/auth/secret").get("usage") == "volume-3-chap"
    xmlcheck.assert_valid_disk(disk.to_xml())
    assert round_trip(disk) == disk


def test_auth_inside_source_wins_over_legacy_placement():
    xml = LEGACY_AUTH_DISK.replace(
        "</source>", "<auth username='u2'><secret type='iscsi' usage='s2'/></auth></source>")
    disk = config.LibvirtConfigGuestDisk.from_xml(xml)
    assert (disk.auth_username, disk.auth_secret_usage) == ("u2", "s2")


def test_unpretty_output_has_no_whitespace():
    assert "\n" not in disk_file().to_xml(pretty=False)


def test_parse_resets_values_absent_from_the_xml():
    disk = disk_network_iscsi_chap()
    disk.parse_str(generate(disk_file()))
    assert disk == round_trip(disk_file())


@pytest.mark.parametrize("xml", [
    "", "not xml", "<disk", "<disk><source></disk>", "<disk/><disk/>", None, 42,
])
def test_malformed_xml_raises_invalid_input(xml):
    with pytest.raises(exception.InvalidInput, match="Invalid input: "):
        config.LibvirtConfigGuestDisk.from_xml(xml)


def test_wrong_root_element_raises_invalid_input():
    with pytest.raises(exception.InvalidInput, match="expected a <disk>"):
        config.LibvirtConfigGuestDisk.from_xml(generate(secret_ceph()))


def test_non_integer_iotune_in_xml_raises_invalid_input():
    xml = "<disk><iotune><total_iops_sec>lots</total_iops_sec></iotune></disk>"
    with pytest.raises(exception.InvalidInput, match="total_iops_sec"):
        config.LibvirtConfigGuestDisk.from_xml(xml)


def test_xml_with_encoding_declaration_parses():
    xml = "<?xml version='1.0' encoding='UTF-8'?>\n" + LIVE_DISK.strip()
    assert config.LibvirtConfigGuestDisk.from_xml(xml).serial == "probe"


def test_unknown_constructor_argument_raises_type_error():
    with pytest.raises(TypeError, match="source_file"):
        config.LibvirtConfigGuestDisk(source_file="/tmp/x")


def test_set_qos_specs_takes_digit_strings_and_ignores_unknown_keys():
    disk = disk_iotune()
    assert (disk.total_bytes_sec, disk.read_iops_sec, disk.write_iops_sec,
            disk.size_iops_sec, disk.read_bytes_sec) == (10485760, 200, 100, 4096, None)


@pytest.mark.parametrize("specs", [None, {}, {"consumer": "back-end"},
                                   {"total_iops_sec": None}])
def test_set_qos_specs_without_known_values_changes_nothing(specs):
    disk = disk_file()
    disk.set_qos_specs(specs)
    assert disk == disk_file()


def test_set_qos_specs_zero_clears_a_limit():
    disk = disk_iotune()
    disk.set_qos_specs({"total_bytes_sec": "0", "total_bytes_sec_max": 0,
                        "total_bytes_sec_max_length": 0, "read_bytes_sec": "5"})
    assert (disk.total_bytes_sec, disk.total_bytes_sec_max, disk.read_bytes_sec) == (
        None, None, 5)
    generate(disk)
    with pytest.raises(exception.InvalidInput, match="read_iops_sec_max .a burst. needs"):
        disk.set_qos_specs({"read_iops_sec": 0})  # its burst would be left alone
    assert disk.read_iops_sec == 200


@pytest.mark.parametrize("raw", ["abc", "-1", -1, "1.5", 1.5, "", True, "1e3"])
def test_set_qos_specs_rejects_bad_values_naming_the_key(raw):
    disk = disk_file()
    with pytest.raises(exception.InvalidInput, match="write_iops_sec"):
        disk.set_qos_specs({"read_iops_sec": "10", "write_iops_sec": raw})
    assert disk == disk_file()


@pytest.mark.parametrize("specs", [
    {"total_bytes_sec": "10", "read_bytes_sec": "5"},
    {"total_iops_sec": 10, "write_iops_sec": 5},
])
def test_set_qos_specs_rejects_total_with_read_write(specs):
    disk = disk_file()
    with pytest.raises(exception.InvalidInput, match="cannot be combined"):
        disk.set_qos_specs(specs)
    assert disk == disk_file()


def test_format_rejects_total_with_read_write():
    disk = disk_file()
    disk.total_iops_sec, disk.read_iops_sec = 10, 5
    with pytest.raises(exception.InvalidInput, match="total_iops_sec"):
        disk.to_xml()


@pytest.mark.parametrize(("usage_type", "element", "usage_id"), [
    ("iscsi", "target", IQN), ("ceph", "name", "client.x"),
    ("volume", "volume", "/x.img")])
def test_secret_usage_element_follows_type(usage_type, element, usage_id):
    secret = config.LibvirtConfigSecret(usage_type=usage_type, usage_id=usage_id)
    generate(secret)
    assert secret.format_dom().find(f"usage/{element}").text == usage_id


def test_secret_flags_default_to_no():
    root = config.LibvirtConfigSecret().format_dom()
    assert (root.get("ephemeral"), root.get("private")) == ("no", "no")
    xmlcheck.assert_valid_secret(config.LibvirtConfigSecret().to_xml())


def test_secret_without_flags_parses_as_no():
    secret = config.LibvirtConfigSecret.from_xml(f"<secret><uuid>{UUID}</uuid></secret>")
    assert (secret.ephemeral, secret.private, secret.uuid) == (False, False, UUID)


def test_secret_unknown_usage_type_raises_on_format():
    secret = config.LibvirtConfigSecret(usage_type="tls", usage_id="x")
    with pytest.raises(exception.InvalidInput, match="'tls'"):
        secret.to_xml()


@pytest.mark.parametrize("values", [{"usage_type": "iscsi"}, {"usage_id": "x"}])
def test_secret_usage_type_and_id_go_together(values):
    with pytest.raises(exception.InvalidInput, match="go together"):
        config.LibvirtConfigSecret(**values).to_xml()


def test_schema_check_rejects_invalid_disk():
    disk = config.LibvirtConfigGuestDisk(source_type="network",
                                         source_protocol="iscsi")
    with pytest.raises(AssertionError, match="not valid per domain.rng"):
        xmlcheck.assert_valid_disk(disk.to_xml())


def test_golden_mismatch_shows_a_diff():
    disk = disk_file()
    disk.serial = "other"
    with pytest.raises(AssertionError, match=r"(?s)-\s*<serial>volume-1.*\+\s*<serial>other"):
        xmlcheck.assert_golden(disk.to_xml(), "virt/disk_file.xml")


def test_golden_ignores_whitespace_and_attribute_order():
    golden = (xmlcheck.DATA_DIR / "virt/secret_ceph.xml").read_text()
    reordered = golden.replace('ephemeral="no" private="yes"',
                               'private="yes"   ephemeral="no"')
    assert reordered != golden
    xmlcheck.assert_golden(" ".join(reordered.split()), "virt/secret_ceph.xml")


def test_golden_regenerates_and_reports_missing_files(monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub" / "new.xml"
        with pytest.raises(AssertionError, match="HVPLUG_REGEN_GOLDEN=1"):
            xmlcheck.assert_golden("<a><b/></a>", path)
        monkeypatch.setenv("HVPLUG_REGEN_GOLDEN", "1")
        xmlcheck.assert_golden("<a><b/></a>", path)
        assert path.read_text() == "<a>\n  <b/>\n</a>\n"
        monkeypatch.delenv("HVPLUG_REGEN_GOLDEN")
        xmlcheck.assert_golden("<a>\n<b></b></a>", path)
