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


@pytest.mark.parametrize(("bus", "used", "expected"), [
    ("virtio", set(), "vda"),
    ("virtio", {"vda", "vdb"}, "vdc"),
    ("scsi", {"sda"}, "sdb"),
    ("sata", {"sda", "sdb"}, "sdc"),
    ("scsi", {f"sd{c}" for c in "abcdefghijklmnopqrstuvwxyz"}, "sdaa"),
])
def test_free_dev_name(bus, used, expected):
    assert guest_disks.free_dev_name(bus, used, "g") == expected


def test_no_free_name():
    used = set(guest_disks._names("vd"))
    with pytest.raises(exception.NoFreeDeviceName):
        guest_disks.free_dev_name("virtio", used, "g")


@pytest.mark.parametrize(("dev", "bus"), [("vda", "scsi"), ("sd1", "scsi"), ("sdA", "sata"),
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


LAYERED = """<domain type='kvm'><name>g</name><devices>
  <disk type='file' device='disk'>
    <driver name='qemu' type='qcow2'/>
    <source file='/var/lib/top.qcow2' index='3'/>
    <backingStore type='file' index='2'>
      <format type='qcow2'/><source file='/var/lib/mid.qcow2'/>
      <backingStore type='network' index='1'>
        <format type='raw'/>
        <source protocol='iscsi' name='iqn.x:v/1'><host name='127.0.0.1' port='3260'/>
          <auth username='u'><secret type='iscsi' usage='iqn.x:v/1'/></auth></source>
        <backingStore/>
      </backingStore>
    </backingStore>
    <mirror type='network' job='copy' ready='yes'>
      <source protocol='iscsi' name='iqn.x:w/2'><host name='127.0.0.2'/></source>
    </mirror>
    <target dev='vda' bus='virtio'/>
  </disk>
</devices></domain>"""


def test_layers_walk_the_backing_chain_then_the_mirror():
    from lxml import etree
    element = etree.fromstring(LAYERED).find("devices/disk")
    found = [(kind, depth, layer.source_type, layer.source_path or layer.source_name)
             for kind, depth, layer in guest_disks.layers(element)]
    assert found == [("source", 0, "file", "/var/lib/top.qcow2"),
                     ("backing", 1, "file", "/var/lib/mid.qcow2"),
                     ("backing", 2, "network", "iqn.x:v/1"),
                     ("mirror", 0, "network", "iqn.x:w/2")]


def test_find_disk_names_the_layer_it_matched():
    found = guest_disks.find_disk(LAYERED, lambda layer: layer.source_name == "iqn.x:v/1")
    assert (found.target_dev, found.kind, found.depth, found.at_top) == ("vda", "backing", 2,
                                                                         False)
    assert found.layer.auth_secret_usage == "iqn.x:v/1"
    assert found.describe_layer() == "backing layer 2 under /var/lib/top.qcow2"
    assert found.xml.startswith("<disk") and "<mirror" in found.xml
    mirror = guest_disks.find_disk(LAYERED, lambda layer: layer.source_name == "iqn.x:w/2")
    assert mirror.describe_layer() == "the block-copy mirror of /var/lib/top.qcow2"
    top = guest_disks.find_disk(DOMAIN, lambda layer: layer.source_name == "iqn.x:v/1")
    assert (top.kind, top.at_top, top.describe_layer()) == ("source", True, "the source")
    assert guest_disks.find_disk(LAYERED, lambda layer: False) is None


class FakeInfo:
    def __init__(self, active, persistent, managed_save):
        self.uuid, self.active, self.persistent = "u-1", active, persistent
        self.managed_save = managed_save


class ViewHost:
    """Just what DomainView reads: state, live/config XML, managed save XML."""

    def __init__(self, live=None, config=None, saved=None):
        self.xml = {"live": live, "config": config, "saved": saved}

    def domain_view(self, name):
        info = FakeInfo(self.xml["live"] is not None, self.xml["config"] is not None,
                        self.xml["saved"] is not None)
        return info, self.xml["live"], self.xml["config"], self.xml["saved"]


def test_domain_view_places_a_disk_live_persistent_or_saved():
    view = guest_disks.DomainView(ViewHost(live=DOMAIN, config=LAYERED), "g")
    assert view.places("sda") == {"live": True, "persistent": False, "saved": False}
    assert view.places("vda") == {"live": True, "persistent": True, "saved": False}
    assert view.used_devs() == {"sda", "vda"}
    assert view.find(lambda layer: layer.source_name == "iqn.x:w/2").kind == "mirror"
    saved = guest_disks.DomainView(ViewHost(config=LAYERED, saved=DOMAIN), "g")
    assert (saved.active, saved.managed_save, saved.current_xml) == (False, True, DOMAIN)
    assert saved.places("sda") == {"live": False, "persistent": False, "saved": True}
    assert saved.find(lambda layer: layer.target_dev == "sda").xml.startswith("<disk")
