import pytest

from hvplug import exception
from hvplug.virt.volume import registry
from hvplug.virt.volume.base import LibvirtBaseVolumeDriver
from hvplug.virt.volume.net import LibvirtNetVolumeDriver


class CustomDriver(LibvirtBaseVolumeDriver):
    driver_volume_type = "custom"


class NotADriver:
    pass


def test_default_maps_iscsi_to_net_driver():
    reg = registry.VolumeDriverRegistry(host=object())
    driver = reg.driver_for({"driver_volume_type": "iscsi", "data": {}})
    assert isinstance(driver, LibvirtNetVolumeDriver)
    assert reg.driver_for_type("iscsi") is driver  # one instance per type


def test_default_maps_fibre_channel():
    from hvplug.virt.volume.fibre_channel import LibvirtFibreChannelVolumeDriver
    reg = registry.VolumeDriverRegistry(host=object())
    driver = reg.driver_for({"driver_volume_type": "fibre_channel", "data": {}})
    assert isinstance(driver, LibvirtFibreChannelVolumeDriver)


def test_configured_entries_add_and_override_types(config_fixture):
    config_fixture.config(group="libvirt", volume_drivers=[
        f"custom={__name__}.CustomDriver", f" iscsi = {__name__}.CustomDriver "])
    reg = registry.VolumeDriverRegistry(host=None)
    from hvplug.virt.volume.fibre_channel import LibvirtFibreChannelVolumeDriver
    from hvplug.virt.volume.iser import LibvirtISERVolumeDriver
    assert reg.classes == {"iscsi": CustomDriver, "iser": LibvirtISERVolumeDriver,
                           "fibre_channel": LibvirtFibreChannelVolumeDriver,
                           "custom": CustomDriver}


@pytest.mark.parametrize(("entry", "reason"), [
    ("iscsi", "expected 'type=dotted.path.Class'"),
    ("=hvplug.virt.volume.net.LibvirtNetVolumeDriver", "expected"),
    ("iscsi=LibvirtNetVolumeDriver", "expected"),
    ("iscsi=hvplug.nonexistent.Driver", "cannot import hvplug.nonexistent"),
    ("iscsi=hvplug.virt.volume.net.NoSuchClass", "has no NoSuchClass"),
    (f"iscsi={__name__}.NotADriver", "is not a LibvirtBaseVolumeDriver subclass"),
    ("iscsi=hvplug.virt.volume.net.LOG", "is not a LibvirtBaseVolumeDriver subclass"),
])
def test_bad_entries_name_the_entry(entry, reason):
    with pytest.raises(exception.InvalidVolumeDriverEntry) as err:
        registry.VolumeDriverRegistry(host=None, entries=[entry])
    assert f"'{entry}'" in str(err.value)
    assert reason in str(err.value)
    assert err.value.exit_code == 2


def test_unknown_type_is_volume_driver_not_found():
    reg = registry.VolumeDriverRegistry(host=None, entries=[])
    with pytest.raises(exception.VolumeDriverNotFound) as err:
        reg.driver_for({"driver_volume_type": "nfs", "data": {}})
    assert "'nfs'" in str(err.value) and "known: fibre_channel, iscsi, iser" in str(err.value)
