"""The iSCSI connector on its own: no libvirt, no hypervisor driver.

The recording fake iscsiadm and trees of the driver tests (``IscsiRig``)
stand in for open-iscsi and the kernel; what a hypervisor knows (which LUNs
other guests use) comes in as ``in_use``.
"""

import pytest

from hvplug import exception
from hvplug.connection_schema import ISCSITarget
from hvplug.initiator.connectors.base import DeviceInfo, ISCSIPath
from hvplug.initiator.connectors.iscsi import ISCSIConnector, volume_data_from_device
from hvplug.initiator.devices import lun_key
from tests.unit.virt.volume.test_iscsi import IQN, PORTAL, IscsiRig, connect_lines, node

PROPS = {"target_portal": PORTAL, "target_iqn": IQN, "target_lun": 1,
         "target_discovered": False}


@pytest.fixture
def rig(tmp_path):
    return IscsiRig(tmp_path)


def connector(rig, **kwargs) -> ISCSIConnector:
    return ISCSIConnector(rig, sysfs_root=str(rig.sysfs), dev_root=str(rig.dev_root),
                          nodes_dir=str(rig.nodes_dir), sleep=lambda _: None, **kwargs)


def test_connect_returns_the_device_and_leaves_props_alone(rig):
    rig.add_target(IQN, portals=[PORTAL])
    props = dict(PROPS)
    device = connector(rig).connect_volume(props)
    link = str(rig.device_path(PORTAL, IQN, 1))
    assert device == DeviceInfo(path=link, iface="default", paths=(
        ISCSIPath(portal=PORTAL, iqn=IQN, lun=1, sid=1, transport="tcp", device=link),))
    assert props == PROPS
    assert rig.transcript() == connect_lines("default")
    assert connector(rig).luns_of(link) == connector(rig).volume_luns(props)


def test_disconnect_keeps_the_session_another_lun_needs(rig):
    rig.add_target(IQN, portals=[PORTAL])
    device = connector(rig).connect_volume(dict(PROPS))
    other_lun = lun_key(ISCSITarget("10.0.0.1", 3260, IQN, 2))
    del rig.calls[:]
    connector(rig).disconnect_volume(PROPS, device, in_use={other_lun})
    assert rig.transcript() == []  # the device is deleted through sysfs, the session stays
    assert (rig.sysfs / "block" / "sda" / "device" / "delete").read_text() == "1"
    assert len(rig.sessions) == 1

    connector(rig).disconnect_volume(PROPS, None)
    assert rig.transcript() == ["iscsiadm -m session", f"{node('default')} --logout",
                                f"{node('default')} -o delete"]
    rig.assert_nothing_left()


def test_extend_rescans_and_reads_the_new_size(rig):
    rig.add_target(IQN, portals=[PORTAL])
    connector(rig).connect_volume(dict(PROPS))
    rig.targets[0].size = 3 << 30
    assert connector(rig).extend_volume(PROPS) == 3 << 30


def test_unusable_iface_without_fallback_is_refused(rig):
    rig.add_target(IQN, portals=[PORTAL])
    with pytest.raises(exception.IfaceUnusable):
        connector(rig, iface="cxgb4i.00:07:43:28:b2:99", iface_fallback=False).connect_volume(
            dict(PROPS))
    rig.assert_nothing_left()


def test_volume_data_from_device_round_trip(rig):
    rig.add_target(IQN, portals=[PORTAL])
    device = connector(rig).connect_volume(dict(PROPS))
    data = volume_data_from_device(connector(rig).devices, device.path)
    assert data == {**PROPS, "target_discovered": True, "device_path": device.path}
    assert volume_data_from_device(connector(rig).devices, "/dev/sdz") is None
