"""The deprecated iSER driver: the iSCSI flow through the ``iser`` iface.

The rig (fake iscsiadm + fake sysfs/dev trees + node record files) is the
one of test_iscsi.py.
"""

import logging

import pytest

from hvplug import exception
from hvplug.virt import attach, inspect
from hvplug.virt.volume import iser
from hvplug.virt.volume.iscsi import LibvirtISCSIVolumeDriver
from hvplug.virt.volume.iser import LibvirtISERVolumeDriver
from hvplug.virt.volume.registry import VolumeDriverRegistry
from tests.unit.virt.volume import test_iscsi
from tests.unit.virt.volume.test_iscsi import (
    IQN,
    PORTAL,
    connect_lines,
    make_info,
    node,
)

# test_iscsi.py's fixtures: the fake iscsiadm and trees, and drivers wired to them.
rig = test_iscsi.rig
sleeps = test_iscsi.sleeps
make_driver = test_iscsi.make_driver


def iser_info(**data) -> dict:
    return make_info(volume_type="iser", **data)


def test_deprecation_warning_once_per_driver(rig, make_driver, caplog):
    rig.use_iface("iser")
    rig.add_target(IQN, portals=[PORTAL])
    with caplog.at_level(logging.WARNING, logger=iser.__name__):
        driver = make_driver(LibvirtISERVolumeDriver)
        driver.disconnect_volume(driver.connect_volume(iser_info(), "guest"), "guest")
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "deprecated" in warning and "iscsi_iface = iser" in warning
    assert "iser=hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver" in warning


def test_connect_and_disconnect_through_the_iser_iface(rig, make_driver, config_fixture):
    rig.use_iface("iser")
    rig.use_iface("cxgb4i")
    # the iSCSI driver's iface does not apply: iSER always uses 'iser'
    config_fixture.config(group="libvirt", iscsi_iface="cxgb4i.00:07:43:28:b2:58")
    rig.add_target(IQN, portals=[PORTAL])
    driver, info = make_driver(LibvirtISERVolumeDriver), iser_info()
    connection = driver.connect_volume(info, "guest")
    assert rig.transcript() == ["iscsiadm -m iface -I iser -o show", *connect_lines("iser")]
    assert [s.transport for s in rig.sessions] == ["iser"]
    assert connection.device.iface == "iser"
    assert connection.device.path == str(rig.device_path(PORTAL, IQN, 1, "iser"))

    del rig.calls[:]
    driver.disconnect_volume(driver.connection_of(iser_info()), "guest")
    assert rig.transcript() == ["iscsiadm -m session", f"{node('iser')} --logout",
                                f"{node('iser')} -o delete"]
    rig.assert_nothing_left()


def test_the_iscsi_driver_with_iface_iser_does_the_same(rig, make_driver, config_fixture):
    """What the deprecation promises: nothing is lost by switching."""
    rig.use_iface("iser")
    rig.add_target(IQN, portals=[PORTAL])
    make_driver(LibvirtISERVolumeDriver).connect_volume(iser_info(), "guest")
    through_iser = rig.transcript()
    driver = make_driver(LibvirtISERVolumeDriver)
    driver.disconnect_volume(driver.connection_of(iser_info()), "guest")
    del rig.calls[:]
    config_fixture.config(group="libvirt", iscsi_iface="iser")
    make_driver(LibvirtISCSIVolumeDriver).connect_volume(make_info(), "guest")
    assert rig.transcript() == through_iser


def test_without_rdma_fallback_on_uses_default(rig, make_driver, caplog):
    rig.add_target(IQN, portals=[PORTAL])
    info = iser_info()
    with caplog.at_level(logging.WARNING):
        connection = make_driver(LibvirtISERVolumeDriver).connect_volume(info, "guest")
    assert connection.device.iface == "default"
    fallback = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(fallback) == 1 and "no RDMA device" in fallback[0]


def test_without_rdma_fallback_off_fails(rig, make_driver, config_fixture):
    config_fixture.config(group="libvirt", iscsi_iface_fallback=False)
    rig.add_target(IQN, portals=[PORTAL])
    with pytest.raises(exception.IfaceUnusable) as err:
        make_driver(LibvirtISERVolumeDriver).connect_volume(iser_info(), "guest")
    assert "'iser'" in str(err.value) and "RDMA" in str(err.value)
    rig.assert_nothing_left()


def test_iser_options(rig, make_driver, config_fixture, sleeps):
    """iser_use_multipath and num_iser_scan_tries, not their iscsi_ namesakes."""
    rig.use_iface("iser")
    config_fixture.config(group="libvirt", iser_use_multipath=True, iscsi_use_multipath=False,
                          num_iser_scan_tries=1, num_iscsi_scan_tries=9)
    rig.multipath = True
    second = "10.0.0.2:3260"
    rig.add_target(IQN, portals=[PORTAL, second])
    info = iser_info(target_portals=[PORTAL, second])
    connection = make_driver(LibvirtISERVolumeDriver).connect_volume(info, "guest")
    assert len(connection.device.paths) == 2
    assert connection.device.path.endswith("/mapper/mpatha")

    rig.add_target(IQN + "-slow", portals=[PORTAL], devices_after_rescans=5)
    with pytest.raises(exception.ISCSIDeviceNotFound):
        make_driver(LibvirtISERVolumeDriver).connect_volume(iser_info(iqn=IQN + "-slow"), "g")
    assert sleeps == [1.0]


def test_attach_and_detach_with_the_default_registry(rig, host, guest):
    """``iser`` maps to this driver by default; detach --dev finds it again."""
    rig.use_iface("iser")
    rig.add_target(IQN, portals=[PORTAL])
    registry = VolumeDriverRegistry(host)
    result = attach.attach_volume(host, registry, guest, iser_info(), bus="scsi")
    assert result.driver == "hvplug.virt.volume.iser.LibvirtISERVolumeDriver"
    assert [r["source"] for r in inspect.volume_rows(host, guest)] == [
        str(rig.device_path(PORTAL, IQN, 1, "iser"))]
    detached = attach.detach_volume(host, registry, guest, dev=result.dev)
    assert detached.driver == "hvplug.virt.volume.iser.LibvirtISERVolumeDriver"
    rig.assert_nothing_left()
