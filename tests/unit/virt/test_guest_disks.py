import pytest

from hvplug import exception
from hvplug.virt import guest_disks

DOMAIN = """<domain type='kvm'><name>g</name><devices>
  <disk type='network' device='disk'>
    <source protocol='iscsi' name='iqn.x:v/1'><host name='127.0.0.1' port='3260'/></source>
    <target dev='sda' bus='scsi'/>
  </disk>
  <disk type='file' device='disk'><source file='/tmp/a'/><target dev='vda' bus='virtio'/></disk>
  <controller type='scsi' model='virtio-scsi'/>
</devices></domain>"""


def test_disks_and_target_devs():
    disks = guest_disks.disks(DOMAIN)
    assert [(d.source_type, d.target_dev) for d in disks] == [("network", "sda"), ("file", "vda")]
    assert guest_disks.target_devs(DOMAIN) == {"sda", "vda"}


def test_disk_xml_returns_libvirts_element():
    xml = guest_disks.disk_xml(DOMAIN, "sda")
    assert xml.startswith("<disk") and "iqn.x:v/1" in xml
    assert guest_disks.disk_xml(DOMAIN, "sdz") is None


@pytest.mark.parametrize("bus, used, expected", [
    ("virtio", set(), "vda"),
    ("virtio", {"vda", "vdb"}, "vdc"),
    ("scsi", {"sda"}, "sdb"),
    ("sata", {"sda", "sdb"}, "sdc"),
    ("scsi", {f"sd{c}" for c in "abcdefghijklmnopqrstuvwxyz"}, "sdaa"),
])
def test_free_dev_name(bus, used, expected):
    assert guest_disks.free_dev_name(bus, used, "g") == expected


def test_no_free_name():
    used = {n for n in guest_disks._names("vd")}
    with pytest.raises(exception.NoFreeDeviceName):
        guest_disks.free_dev_name("virtio", used, "g")


@pytest.mark.parametrize("dev, bus", [("vda", "scsi"), ("sd1", "scsi"), ("sdA", "sata"),
                                      ("sd", "scsi"), ("hda", "virtio")])
def test_check_dev_name_rejects_wrong_names(dev, bus):
    with pytest.raises(exception.InvalidDeviceName) as err:
        guest_disks.check_dev_name(dev, bus, set(), "g")
    assert err.value.exit_code == 2


def test_check_dev_name_in_use_and_bad_bus():
    assert guest_disks.check_dev_name("sdc", "scsi", {"sda"}, "g") == "sdc"
    with pytest.raises(exception.DeviceNameInUse):
        guest_disks.check_dev_name("sda", "scsi", {"sda"}, "g")
    with pytest.raises(exception.InvalidInput):
        guest_disks.check_dev_name("xda", "ide", set(), "g")
