"""connector_properties: what identifies this host to an array."""

import socket

from hvplug.initiator.connectors import base


def fc_host(root, n, wwpn, wwnn):
    port = root / "class" / "fc_host" / f"host{n}"
    port.mkdir(parents=True)
    (port / "port_name").write_text(f"0x{wwpn}\n")
    (port / "node_name").write_text(f"0x{wwnn}\n")


def test_iscsi_only_host(tmp_path, config_fixture):
    initiator = tmp_path / "initiatorname.iscsi"
    initiator.write_text("## comment\nInitiatorName=iqn.1993-08.org.debian:01:unit\n")
    config_fixture.config(group="libvirt", iscsi_initiator_name="")
    props = base.connector_properties(sysfs_root=str(tmp_path), initiator_file=str(initiator))
    assert props == {"host": socket.gethostname(),
                     "initiator": "iqn.1993-08.org.debian:01:unit"}


def test_fc_host_without_an_iqn(tmp_path, config_fixture):
    config_fixture.config(group="libvirt", iscsi_initiator_name="")
    fc_host(tmp_path, 1, "21000024FF3A1B2D", "20000024ff3a1b2d")
    fc_host(tmp_path, 0, "21000024ff3a1b2c", "20000024ff3a1b2c")
    props = base.connector_properties(sysfs_root=str(tmp_path),
                                      initiator_file=str(tmp_path / "none"))
    assert "initiator" not in props  # as os-brick: a key only for what the host has
    assert props["wwpns"] == ["21000024ff3a1b2c", "21000024ff3a1b2d"]
    assert props["wwnns"] == ["20000024ff3a1b2c", "20000024ff3a1b2d"]


def test_device_info_to_dict():
    info = base.DeviceInfo(path="/dev/mapper/mpatha", multipath=True)
    assert info.to_dict() == {"path": "/dev/mapper/mpatha", "type": "block", "multipath": True,
                              "scsi_wwn": None, "iface": None, "paths": ()}
