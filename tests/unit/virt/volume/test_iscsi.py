"""The host-attached iSCSI driver against a recording fake iscsiadm and fake trees.

Nothing here logs in for real: this machine has no iSCSI kernel transport
and no offload hardware.  ``FakeIscsiadm`` keeps iscsiadm's state; the
``IscsiRig`` wrapper adds what the driver needs around it (node record
files, the kernel's sysfs view of sessions and disks, multipath maps).
"""

import copy
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hvplug import exception
from hvplug.connection_schema import ISCSITarget
from hvplug.initiator import devices, iscsiadm
from hvplug.initiator.connectors import iscsi
from hvplug.initiator.connectors.base import ISCSIPath
from hvplug.utils import executor
from hvplug.virt import attach, config, inspect
from hvplug.virt.volume import base
from hvplug.virt.volume.iscsi import LibvirtISCSIVolumeDriver
from hvplug.virt.volume.registry import VolumeDriverRegistry
from tests.fakeiscsiadm import FakeIscsiadm, split_portal
from tests.fakesysfs import FakeSysfs
from tests.xmlcheck import assert_valid_disk

IQN = "iqn.2010-10.org.openstack:volume-42"
PORTAL = "10.0.0.1:3260"
PASSWORD = "chap-secret-0nly-in-files"
PASSWORD_IN = "mutual-secret-0nly-in-files"
HWADDRESS = "00:07:43:28:b2:58"
OFFLOAD = ("cxgb3i", "cxgb4i", "qla4xxx", "bnx2i", "be2iscsi", "ocs", "qedi")
TRANSPORTS = ("default", "iser", *OFFLOAD)
ISCSI_DRIVER = "iscsi=hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver"
SECTORS = 2 * 1024 * 1024  # a 1 GiB LUN, as sysfs counts it


class IscsiRig(FakeIscsiadm):
    """FakeIscsiadm plus what the kernel and open-iscsi's files would show.

    - node records mirrored as open-iscsi 2.1 files under ``nodes_dir``, so
      the CHAP settings the driver writes there reach the fake's login check;
    - the disks the driver deleted through sysfs (``deleted_disks``);
    - with ``multipath=True``, a dm map (``/dev/mapper/mpathN``) over the
      disks of one LUN once two paths exist; ``multipath -f`` removes it;
    - non-iscsiadm commands (multipath tools) recorded in ``calls`` too.
    """

    def __init__(self, root: Path):
        self.root = root
        self.hardware = FakeSysfs(root / "sys")
        self.nodes_dir = root / "etc" / "iscsi" / "nodes"
        self.dev_root = root / "dev"
        super().__init__(self.hardware.root, self.dev_root)  # self.sysfs: the sysfs root
        self.multipath = False
        self.deleted_disks: list[str] = []
        self.maps: dict[tuple, str] = {}

    # -- set-up helpers ---------------------------------------------------------
    def use_iface(self, transport: str) -> str:
        """Hardware and iface record for ``transport``; the iface name to configure."""
        if transport == "default":
            return "default"
        if transport == "iser":
            self.hardware.add_rdma_device()
            return "iser"
        self.hardware.add_offload(transport, HWADDRESS)
        return f"{transport}.{HWADDRESS}"  # iscsiadm binds it from sysfs on -m iface

    def node_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.nodes_dir)) for p in self.nodes_dir.rglob("*")
                      if p.is_file())

    def argv_text(self) -> str:
        return "\n".join(" ".join(argv) for argv in self.calls)

    def assert_nothing_left(self) -> None:
        assert self.sessions == [] and self.nodes == {} and self.node_files() == []
        assert not list((self.dev_root / "disk" / "by-path").glob("*"))

    # -- the executor -------------------------------------------------------------
    def __call__(self, *cmd, **kwargs):
        timeout = kwargs.get("timeout", 60.0)
        assert timeout is not None and 0 < timeout < math.inf, f"unbounded wait: {cmd}"
        if cmd[0] != "iscsiadm":
            self.calls.append(tuple(cmd))
            self.call_kwargs.append(kwargs)
            self._multipath_tool(cmd)
            return "", ""
        self._files_to_records()
        self._note_deleted_disks()
        before = copy.deepcopy(self.nodes)
        try:
            return super().__call__(*cmd, **kwargs)
        finally:
            self._records_to_files(before)
            if self.multipath:
                self._assemble_maps()

    def record_path(self, key: tuple, records: dict | None = None) -> Path:
        """Where open-iscsi 2.1 keeps the record ``key`` (see NodeRecords)."""
        iqn, portal, iface = key
        host, _, port = split_portal(portal).rpartition(":")
        host, tpgt = host.strip("[]"), (records or self.nodes)[key]["node.tpgt"]
        if tpgt == "-1":
            return self.nodes_dir / iqn / f"{host},{port}"
        return self.nodes_dir / iqn / f"{host},{port},{tpgt}" / iface

    def _files_to_records(self) -> None:
        for key, record in self.nodes.items():
            path = self.record_path(key)
            if path.is_file():
                for line in path.read_text().splitlines():
                    name, sep, value = line.partition(" = ")
                    if sep and name.startswith("node.session.auth."):
                        record[name] = value

    def _records_to_files(self, before: dict) -> None:
        for key in before.keys() - self.nodes.keys():
            path = self.record_path(key, before)
            path.unlink(missing_ok=True)
            for parent in (path.parent, path.parent.parent):
                if parent != self.nodes_dir and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
        for key, record in self.nodes.items():
            path = self.record_path(key)
            if record != before.get(key) or not path.exists():
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(self._node_show(key, True))

    def _note_deleted_disks(self) -> None:
        """Disks the driver told the kernel to drop (before the fake's logout removes them)."""
        for delete in (self.sysfs / "block").glob("sd*/device/delete"):
            if delete.read_text().strip() == "1" and delete.parts[-3] not in self.deleted_disks:
                self.deleted_disks.append(delete.parts[-3])

    def _assemble_maps(self) -> None:
        paths: dict[tuple, list[str]] = {}
        for s in self.sessions:
            for lun, disk in s.devices.items():
                paths.setdefault((s.target.iqn, lun), []).append(disk)
        for key, disks in paths.items():
            if len(disks) < 2 or key in self.maps:
                continue
            dm, name = f"dm-{len(self.maps)}", f"mpath{chr(ord('a') + len(self.maps))}"
            self.maps[key] = dm
            (self.sysfs / "block" / dm / "dm").mkdir(parents=True)
            (self.sysfs / "block" / dm / "dm" / "name").write_text(f"{name}\n")
            (self.sysfs / "block" / dm / "size").write_text(f"{SECTORS}\n")
            for disk in disks:
                (self.sysfs / "block" / dm / "slaves").mkdir(exist_ok=True)
                (self.sysfs / "block" / dm / "slaves" / disk).touch()
                (self.sysfs / "block" / disk / "holders" / dm).touch()
            (self.dev_root / dm).touch()
            (self.dev_root / "mapper").mkdir(exist_ok=True)
            os.symlink(f"../{dm}", self.dev_root / "mapper" / name)

    def _multipath_tool(self, cmd: tuple) -> None:
        if cmd[:2] != ("multipath", "-f"):
            return
        for key, dm in list(self.maps.items()):
            name_file = self.sysfs / "block" / dm / "dm" / "name"
            if name_file.read_text().strip() == cmd[2]:
                for holder in (self.sysfs / "block").glob(f"sd*/holders/{dm}"):
                    holder.unlink()
                shutil.rmtree(self.sysfs / "block" / dm)
                (self.dev_root / "mapper" / cmd[2]).unlink()
                (self.dev_root / dm).unlink()
                del self.maps[key]


@pytest.fixture
def rig(tmp_path, monkeypatch, host):
    """The fake iscsiadm and trees, wired in as the executor and the driver's roots.

    Patching the class's roots (not only passing them) is what lets the
    registry's drivers and the classmethods (handles_disk) see the fake trees.
    """
    rig = IscsiRig(tmp_path)
    monkeypatch.setattr(executor, "execute", rig)
    monkeypatch.setattr(LibvirtISCSIVolumeDriver, "sysfs_root", str(rig.sysfs))
    monkeypatch.setattr(LibvirtISCSIVolumeDriver, "dev_root", str(rig.dev_root))
    monkeypatch.setattr(LibvirtISCSIVolumeDriver, "nodes_dir", str(rig.nodes_dir))
    yield rig
    # Whatever the test did: no password ever reached a command line.
    for secret in (PASSWORD, PASSWORD_IN, "wrong-password"):
        assert secret not in rig.argv_text()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_driver(rig, host, sleeps):
    def make(cls=LibvirtISCSIVolumeDriver, **kwargs):
        return cls(host, execute=rig, sleep=sleeps.append, **kwargs)
    return make


def make_info(volume_type="iscsi", portal=PORTAL, iqn=IQN, lun=1, **data) -> dict:
    return {"driver_volume_type": volume_type,
            "data": {"target_portal": portal, "target_iqn": iqn, "target_lun": lun,
                     "target_discovered": False, "volume_id": "42", **data},
            "serial": "42"}


def node(iface: str, portal: str = PORTAL, iqn: str = IQN) -> str:
    return f"iscsiadm -m node -T {iqn} -p {portal} -I {iface}"


def connect_lines(iface: str, portal: str = PORTAL, iqn: str = IQN,
                  discovered: bool = False) -> list[str]:
    """What one portal's login runs once the iface is chosen."""
    lines = [] if discovered else [
        f"iscsiadm -m discovery -t sendtargets -p {portal} -I {iface}"]
    lines.append(f"{node(iface, portal, iqn)} -o show")
    if discovered:
        lines.append(f"{node(iface, portal, iqn)} -o new")
    return [*lines, f"{node(iface, portal, iqn)} -o update -n node.startup -v automatic",
            "iscsiadm -m session",
            f"{node(iface, portal, iqn)} --login",
            "iscsiadm -m session"]


# -- every transport, connect and disconnect -------------------------------------

def test_cxgb4i_transcript(rig, make_driver, config_fixture):
    """The whole conversation with iscsiadm for a Chelsio offload port."""
    iface = rig.use_iface("cxgb4i")
    rig.add_target(IQN, portals=[PORTAL])
    config_fixture.config(group="libvirt", iscsi_iface=iface)
    driver, info = make_driver(), make_info()

    connection = driver.connect_volume(info, "guest")
    assert rig.transcript() == [
        "iscsiadm -m iface -I cxgb4i.00:07:43:28:b2:58 -o show",
        "iscsiadm -m discovery -t sendtargets -p 10.0.0.1:3260 -I cxgb4i.00:07:43:28:b2:58",
        f"iscsiadm -m node -T {IQN} -p 10.0.0.1:3260 -I cxgb4i.00:07:43:28:b2:58 -o show",
        (f"iscsiadm -m node -T {IQN} -p 10.0.0.1:3260 -I cxgb4i.00:07:43:28:b2:58 "
         "-o update -n node.startup -v automatic"),
        "iscsiadm -m session",
        f"iscsiadm -m node -T {IQN} -p 10.0.0.1:3260 -I cxgb4i.00:07:43:28:b2:58 --login",
        "iscsiadm -m session",
    ]
    link = rig.device_path(PORTAL, IQN, 1, "cxgb4i")
    assert link.name.startswith("pci-0000:05:00.4-ip-")
    device = connection.device
    assert device.path == str(link) and device.iface == iface
    assert device.paths == (ISCSIPath(portal=PORTAL, iqn=IQN, lun=1, sid=1,
                                      transport="cxgb4i", device=str(link)),)
    assert device.multipath is False
    assert connection.portal == PORTAL
    assert info == make_info()  # the caller's document is never written into

    del rig.calls[:]
    driver.disconnect_volume(connection, "guest")
    assert rig.transcript() == [
        f"iscsiadm -m node -T {IQN} -p 10.0.0.1:3260 -I cxgb4i.00:07:43:28:b2:58 --logout",
        f"iscsiadm -m node -T {IQN} -p 10.0.0.1:3260 -I cxgb4i.00:07:43:28:b2:58 -o delete",
    ]
    assert rig.deleted_disks == ["sda"]
    rig.assert_nothing_left()


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded-iface", "iface-from-sysfs"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_transport_connects_and_disconnects(rig, make_driver, config_fixture,
                                                  transport, recorded):
    iface = rig.use_iface(transport)
    rig.add_target(IQN, portals=[PORTAL])
    if transport != "default":
        config_fixture.config(group="libvirt", iscsi_iface=iface)
    driver, info = make_driver(), make_info()

    connection = driver.connect_volume(info, "guest")
    check = [] if transport == "default" else [f"iscsiadm -m iface -I {iface} -o show"]
    assert rig.transcript() == check + connect_lines(iface)
    for argv in rig.calls:
        if "discovery" in argv or "--login" in argv:
            assert argv[argv.index("-I") + 1] == iface
    session_transport = "tcp" if transport == "default" else transport
    assert [s.transport for s in rig.sessions] == [session_transport]
    assert connection.device.path == str(rig.device_path(PORTAL, IQN, 1, session_transport))
    assert Path(connection.device.path).resolve() == rig.dev_root / "sda"

    del rig.calls[:]
    driver.disconnect_volume(connection if recorded else driver.connection_of(make_info()),
                             "guest")
    listing = [] if recorded else ["iscsiadm -m session"]
    assert rig.transcript() == [*listing, f"{node(iface)} --logout", f"{node(iface)} -o delete"]
    assert rig.deleted_disks == ["sda"]
    rig.assert_nothing_left()


def test_discovered_target_gets_a_static_record(rig, make_driver):
    rig.add_target(IQN, portals=[PORTAL])
    driver, info = make_driver(), make_info(target_discovered=True)
    driver.connect_volume(info, "guest")
    assert rig.transcript() == connect_lines("default", discovered=True)
    assert rig.node_files() == [f"{IQN}/10.0.0.1,3260"]


def test_ipv6_portal(rig, make_driver):
    portal = "[2001:db8::1]:3260"
    rig.add_target(IQN, portals=[portal])
    driver, info = make_driver(), make_info(portal=portal, auth_method="CHAP",
                                            auth_username="u", auth_password=PASSWORD)
    rig.targets[0].chap = ("u", PASSWORD)
    driver.connect_volume(info, "guest")
    assert rig.transcript() == connect_lines("default", portal=portal)
    # open-iscsi names the record file without brackets
    assert rig.node_files() == [f"{IQN}/2001:db8::1,3260,1/default"]
    driver.disconnect_volume(driver.connection_of(make_info(portal=portal)), "guest")
    rig.assert_nothing_left()


# -- the iface choice --------------------------------------------------------------

def test_fallback_on_warns_once_and_uses_default(rig, make_driver, config_fixture, caplog):
    missing = "cxgb4i.00:07:43:28:b2:99"
    config_fixture.config(group="libvirt", iscsi_iface=missing)
    rig.add_target(IQN, portals=[PORTAL])
    rig.add_target(IQN + "-b", portals=[PORTAL])
    driver = make_driver()
    with caplog.at_level(logging.WARNING, logger=iscsi.__name__):
        driver.connect_volume(make_info(), "guest")
        driver.connect_volume(make_info(iqn=IQN + "-b"), "guest")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert missing in warnings[0] and "no iface record" in warnings[0]
    assert "'default'" in warnings[0]
    check = f"iscsiadm -m iface -I {missing} -o show"  # every connect looks again
    assert rig.transcript() == [check, *connect_lines("default"),
                                check, *connect_lines("default", iqn=IQN + "-b")]
    assert {s.iface for s in rig.sessions} == {"default"}


def test_fallback_off_fails_and_leaves_nothing(rig, make_driver, config_fixture):
    missing = "cxgb4i.00:07:43:28:b2:99"
    config_fixture.config(group="libvirt", iscsi_iface=missing, iscsi_iface_fallback=False)
    rig.add_target(IQN, portals=[PORTAL])
    info = make_info()
    with pytest.raises(exception.IfaceUnusable) as err:
        make_driver().connect_volume(info, "guest")
    assert missing in str(err.value) and "no iface record" in str(err.value)
    assert rig.transcript() == [f"iscsiadm -m iface -I {missing} -o show"]
    assert info == make_info()
    rig.assert_nothing_left()


@pytest.mark.parametrize("transport", OFFLOAD)
def test_missing_hardware(rig, make_driver, config_fixture, transport):
    """The record exists (left from another host, say) but the adapter does not."""
    iface = f"{transport}.{HWADDRESS}"
    rig.new_iface(iface, transport_name=transport, hwaddress=HWADDRESS)
    rig.add_target(IQN, portals=[PORTAL])
    config_fixture.config(group="libvirt", iscsi_iface=iface, iscsi_iface_fallback=False)
    with pytest.raises(exception.IfaceUnusable) as err:
        make_driver().connect_volume(make_info(), "guest")
    assert f"No {transport} hardware" in str(err.value) and HWADDRESS in str(err.value)
    rig.assert_nothing_left()

    config_fixture.config(group="libvirt", iscsi_iface_fallback=True)
    info = make_info()
    assert make_driver().connect_volume(info, "guest").device.iface == "default"


def test_transport_module_missing_fails_cleanly(rig, make_driver, config_fixture):
    """Hardware seen but its kernel transport not loaded: discovery says so (exit 12)."""
    iface = rig.use_iface("cxgb4i")
    rig.kernel_transports = {"tcp"}
    rig.add_target(IQN, portals=[PORTAL])
    config_fixture.config(group="libvirt", iscsi_iface=iface)
    with pytest.raises(exception.ISCSIDiscoveryFailed) as err:
        make_driver().connect_volume(make_info(), "guest")
    assert "iSCSI driver not found" in str(err.value) and iface in str(err.value)
    rig.assert_nothing_left()


# -- failures that must leave nothing ------------------------------------------------

def test_stuck_login_times_out_and_leaves_nothing(rig, make_driver, config_fixture):
    iface = rig.use_iface("qla4xxx")
    config_fixture.config(group="libvirt", iscsi_iface=iface, iscsi_login_timeout=7.5)
    rig.add_target(IQN, portals=[PORTAL])
    rig.hang("login")
    with pytest.raises(exception.ISCSILoginTimeout) as err:
        make_driver().connect_volume(make_info(), "guest")
    assert "7.5 s" in str(err.value) and iface in str(err.value)
    assert rig.timeouts == [7.5]
    assert rig.transcript()[-3:] == [f"{node(iface)} --login", f"{node(iface)} --logout",
                                     f"{node(iface)} -o delete"]
    assert all(kw["timeout"] == 7.5 for argv, kw in zip(rig.calls, rig.call_kwargs, strict=True)
               if "iface" not in argv)
    rig.assert_nothing_left()


def test_stuck_login_on_one_portal_moves_to_the_next(rig, make_driver):
    second = "10.0.0.2:3260"
    rig.add_target(IQN, portals=[PORTAL, second])
    rig.hang("login")
    info = make_info(target_portals=[PORTAL, second])
    assert make_driver().connect_volume(info, "guest").portal == second
    assert [s.portal for s in rig.sessions] == [second]
    # Discovery at the second portal wrote the first one's record again; the
    # disconnect removes the records of every portal the volume lists.
    driver = make_driver()
    driver.disconnect_volume(driver.connection_of(make_info(target_portals=[PORTAL, second])),
                             "guest")
    rig.assert_nothing_left()


def test_dead_first_portal(rig, make_driver, caplog):
    second = "10.0.0.2:3260"
    rig.add_target(IQN, portals=[second])
    info = make_info(target_portals=[PORTAL, second])
    with caplog.at_level(logging.WARNING, logger=iscsi.__name__):
        connection = make_driver().connect_volume(info, "guest")
    assert connection.device.paths[0].portal == second
    assert "Connection refused" in caplog.text and PORTAL in caplog.text


def test_unknown_target_at_portal(rig, make_driver):
    rig.add_target("iqn.2010-10.org.openstack:other", portals=[PORTAL])
    with pytest.raises(exception.ISCSIDiscoveryFailed) as err:
        make_driver().connect_volume(make_info(), "guest")
    assert f"does not offer {IQN}" in str(err.value)


def test_device_after_rescans_with_growing_bounded_waits(rig, make_driver, sleeps):
    rig.add_target(IQN, portals=[PORTAL], devices_after_rescans=2)
    info = make_info()
    make_driver().connect_volume(info, "guest")
    assert rig.transcript()[-2:] == ["iscsiadm -m session -r 1 --rescan"] * 2
    assert sleeps == [1.0, 2.0]


def test_device_never_appears(rig, make_driver, sleeps, config_fixture):
    config_fixture.config(group="libvirt", num_iscsi_scan_tries=6)
    rig.add_target(IQN, portals=[PORTAL], devices_after_rescans=100)
    with pytest.raises(exception.ISCSIDeviceNotFound) as err:
        make_driver().connect_volume(make_info(), "guest")
    assert "after 6 scans" in str(err.value)
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert rig.transcript()[-2:] == [f"{node('default')} --logout",
                                     f"{node('default')} -o delete"]
    rig.assert_nothing_left()


def test_failed_new_lun_keeps_the_session_another_lun_uses(rig, make_driver, sleeps):
    """A shared target: LUN 2's failure must not log out LUN 1's session."""
    rig.add_target(IQN, portals=[PORTAL], luns=(1,))
    driver = make_driver()
    driver.connect_volume(make_info(lun=1), "guest")
    with pytest.raises(exception.ISCSIDeviceNotFound):
        driver.connect_volume(make_info(lun=2), "guest")
    assert len(rig.sessions) == 1 and "--logout" not in rig.argv_text()


# -- CHAP ------------------------------------------------------------------------------

def chap_info(mutual: bool = False, password: str = PASSWORD) -> dict:
    info = make_info(auth_method="CHAP", auth_username="chapuser", auth_password=password)
    if mutual:
        info["data"].update(auth_username_in="targetuser", auth_password_in=PASSWORD_IN)
    return info


@pytest.mark.parametrize("mutual", [False, True], ids=["one-way", "mutual"])
def test_chap_goes_into_the_node_record_file(rig, make_driver, mutual, caplog):
    rig.add_target(IQN, portals=[PORTAL], chap=("chapuser", PASSWORD),
                   chap_in=("targetuser", PASSWORD_IN) if mutual else None)
    info = chap_info(mutual)
    with caplog.at_level(logging.DEBUG):
        make_driver().connect_volume(info, "guest")
    assert len(rig.sessions) == 1  # the fake's login checked the record's CHAP
    (record,) = rig.node_files()
    path = rig.nodes_dir / record
    assert path.stat().st_mode & 0o777 == 0o600
    settings = dict(line.split(" = ", 1) for line in path.read_text().splitlines()
                    if " = " in line)
    assert settings["node.session.auth.authmethod"] == "CHAP"
    assert settings["node.session.auth.username"] == "chapuser"
    assert settings["node.session.auth.password"] == PASSWORD
    if mutual:
        assert settings["node.session.auth.username_in"] == "targetuser"
        assert settings["node.session.auth.password_in"] == PASSWORD_IN
    assert path.read_text().rstrip().endswith("# END RECORD")
    assert PASSWORD not in caplog.text and PASSWORD_IN not in caplog.text
    assert all(kw["secrets"] == (() if "--login" not in argv else
                                 tuple(p for p in (PASSWORD, PASSWORD_IN) if mutual or p == PASSWORD))
               for argv, kw in zip(rig.calls, rig.call_kwargs, strict=True)
               if argv[0] == "iscsiadm" and "--login" in argv)


def test_wrong_chap_password(rig, make_driver):
    rig.add_target(IQN, portals=[PORTAL], chap=("chapuser", PASSWORD))
    with pytest.raises(exception.AuthenticationFailed) as err:
        make_driver().connect_volume(chap_info(password="wrong-password"), "guest")
    assert "chapuser" in str(err.value) and "wrong-password" not in str(err.value)
    rig.assert_nothing_left()


def test_wrong_mutual_chap_fails_the_login(rig, make_driver):
    rig.add_target(IQN, portals=[PORTAL], chap=("chapuser", PASSWORD),
                   chap_in=("targetuser", "something-else"))
    with pytest.raises(exception.ISCSILoginFailed) as err:
        make_driver().connect_volume(chap_info(mutual=True), "guest")
    assert "19" in str(err.value) and PASSWORD_IN not in str(err.value)
    rig.assert_nothing_left()


def test_auth_settings_checks_mutual_pairs():
    with pytest.raises(exception.InvalidConnectionInfo, match="auth_password_in"):
        iscsi.auth_settings({"auth_method": "CHAP", "auth_username": "u",
                             "auth_password": "p", "auth_username_in": "t"})
    assert iscsi.auth_settings({"auth_method": "None"}) is None


# -- multipath -------------------------------------------------------------------------

def test_multipath_over_two_portals(rig, make_driver, config_fixture):
    config_fixture.config(group="libvirt", iscsi_use_multipath=True)
    rig.multipath = True
    second = "10.0.0.2:3260"
    rig.add_target(IQN, portals=[PORTAL, second])
    info = make_info(target_portals=[PORTAL, second], target_iqns=[IQN, IQN],
                     target_luns=[1, 1])
    driver = make_driver()
    connection = driver.connect_volume(info, "guest")
    assert rig.transcript() == connect_lines("default") + connect_lines("default", second)
    device = connection.device
    assert device.path == str(rig.dev_root / "mapper" / "mpatha")
    assert device.multipath is True
    assert [(p.portal, p.device) for p in device.paths] == [
        (PORTAL, str(rig.device_path(PORTAL, IQN, 1))),
        (second, str(rig.device_path(second, IQN, 1)))]

    disk = config.LibvirtConfigGuestDisk.from_xml(
        driver.get_config(connection, {"dev": "sdb", "bus": "scsi"}).to_xml())
    assert driver.handles_disk(disk) and driver.is_same_volume(disk, make_info())
    rebuilt = LibvirtISCSIVolumeDriver.connection_info_from_disk(disk)
    assert rebuilt["data"]["target_portals"] == [PORTAL, second]

    del rig.calls[:]
    driver.disconnect_volume(driver.connection_of(rebuilt, disk), "guest")
    assert rig.transcript() == [
        "multipath -f mpatha", "iscsiadm -m session",
        f"{node('default')} --logout", f"{node('default')} -o delete",
        f"{node('default', second)} --logout", f"{node('default', second)} -o delete"]
    assert sorted(rig.deleted_disks) == ["sda", "sdb"]
    rig.assert_nothing_left()


def test_multipath_without_a_map_falls_back_to_one_path(rig, make_driver, config_fixture,
                                                        caplog, sleeps):
    config_fixture.config(group="libvirt", iscsi_use_multipath=True, num_iscsi_scan_tries=2)
    second = "10.0.0.2:3260"
    rig.add_target(IQN, portals=[PORTAL, second])
    info = make_info(target_portals=[PORTAL, second])
    with caplog.at_level(logging.WARNING, logger=iscsi.__name__):
        connection = make_driver().connect_volume(info, "guest")
    assert connection.device.path == str(rig.device_path(PORTAL, IQN, 1))
    assert connection.device.multipath is False and len(rig.sessions) == 2
    assert "no multipath device" in caplog.text
    assert sleeps == [1.0, 2.0]


# -- the disk ----------------------------------------------------------------------------

def test_get_config(rig, make_driver):
    rig.add_target(IQN, portals=[PORTAL])
    driver, info = make_driver(), make_info(qos_specs={"total_iops_sec": 500})
    connection = driver.connect_volume(info, "guest")
    xml = driver.get_config(connection, {"dev": "sdb", "bus": "scsi"}).to_xml()
    assert_valid_disk(xml)
    assert xml.split() == f"""<disk type="block" device="disk">
      <driver name="qemu" type="raw" cache="none" io="native"/>
      <source dev="{rig.device_path(PORTAL, IQN, 1)}"/>
      <target dev="sdb" bus="scsi"/>
      <iotune><total_iops_sec>500</total_iops_sec></iotune>
      <serial>42</serial>
    </disk>""".replace("><", "> <").split()


def test_get_config_before_connect_names_the_by_path_link(make_driver, config_fixture):
    config_fixture.config(group="libvirt", disk_cachemode="writeback")
    driver = make_driver()
    disk = driver.get_config(driver.connection_of(make_info(portal="[2001:db8::1]:3260")),
                             {"dev": "vdb", "bus": "virtio"})
    assert disk.source_path.endswith(f"/disk/by-path/ip-2001:db8::1:3260-iscsi-{IQN}-lun-1")
    assert disk.driver_io is None  # QEMU wants the host cache bypassed for aio=native


@pytest.mark.parametrize(("name", "expected"), [
    (f"ip-10.0.0.1:3260-iscsi-{IQN}-lun-1", ("10.0.0.1", 3260, IQN, 1)),
    (f"pci-0000:05:00.4-ip-10.0.0.1:3261-iscsi-{IQN}-lun-12", ("10.0.0.1", 3261, IQN, 12)),
    (f"ip-2001:db8::1:3260-iscsi-{IQN}-lun-0", ("2001:db8::1", 3260, IQN, 0)),
    (f"ip-[2001:db8::1]:3260-iscsi-{IQN}-lun-0", ("2001:db8::1", 3260, IQN, 0)),
    (f"ip-10.0.0.1:3260-iscsi-{IQN}-lun-1-part1", None),
    ("pci-0000:00:1f.2-ata-1", None),
])
def test_parse_by_path(name, expected):
    target = devices.parse_by_path(name)
    assert (target and (target.host, target.port, target.iqn, target.lun)) == expected


def test_handles_disk_round_trip(rig):
    path = rig.dev_root / "disk" / "by-path" / f"ip-10.0.0.1:3260-iscsi-{IQN}-lun-3"
    disk = config.LibvirtConfigGuestDisk(source_type="block", source_path=str(path),
                                         target_dev="sdc", serial="42")
    assert LibvirtISCSIVolumeDriver.handles_disk(disk)
    info = LibvirtISCSIVolumeDriver.connection_info_from_disk(disk)
    assert info == {"driver_volume_type": "iscsi", "serial": "42",
                    "data": {"target_portal": PORTAL, "target_iqn": IQN, "target_lun": 3,
                             "target_discovered": True, "device_path": str(path)}}
    other = config.LibvirtConfigGuestDisk(source_type="block", source_path="/dev/sdz")
    network = config.LibvirtConfigGuestDisk(source_type="network", source_protocol="iscsi")
    assert not LibvirtISCSIVolumeDriver.handles_disk(other)
    assert not LibvirtISCSIVolumeDriver.handles_disk(network)


# -- extend ------------------------------------------------------------------------------

def test_extend(rig, host, guest, config_fixture):
    config_fixture.config(group="libvirt", volume_drivers=[ISCSI_DRIVER])
    rig.add_target(IQN, portals=[PORTAL])
    registry = VolumeDriverRegistry(host)
    info = make_info()
    result = attach.attach_volume(host, registry, guest, info, bus="scsi")
    new_size = 3 << 30
    rig.targets[0].size = new_size  # the target grew the LUN; a rescan shows it
    os.truncate(rig.dev_root / "sda", new_size)  # what QEMU reads of the block device
    del rig.calls[:]
    driver = registry.driver_for(info)
    assert driver.extend_volume(info, guest, result.dev, new_size) == new_size
    assert rig.transcript() == ["iscsiadm -m session", "iscsiadm -m session -r 1 --rescan"]
    assert host.block_capacity(guest, result.dev) == new_size


def test_extend_multipath_resizes_the_map(rig, make_driver, config_fixture):
    config_fixture.config(group="libvirt", iscsi_use_multipath=True)
    rig.multipath = True
    rig.add_target(IQN, portals=[PORTAL, "10.0.0.2:3260"])
    info = make_info(target_portals=[PORTAL, "10.0.0.2:3260"])
    driver = make_driver()
    driver.connect_volume(info, "guest")
    (rig.sysfs / "block" / "dm-0" / "size").write_text(f"{4 * SECTORS}\n")
    driver.host.block_resize = lambda *args: calls.append(args)
    calls: list = []
    del rig.calls[:]
    assert driver.extend_volume(info, "guest", "sdb", 4 << 30) == 4 << 30
    assert rig.transcript() == ["iscsiadm -m session", "iscsiadm -m session -r 1 --rescan",
                                "iscsiadm -m session -r 2 --rescan",
                                "multipathd resize map mpatha"]
    assert calls == [("guest", "sdb", 4 << 30)]


# -- through the real attach flow --------------------------------------------------------

def test_attach_list_and_detach_by_dev(rig, host, make_guest, config_fixture):
    iface = rig.use_iface("bnx2i")
    config_fixture.config(group="libvirt", volume_drivers=[ISCSI_DRIVER], iscsi_iface=iface)
    rig.add_target(IQN, portals=[PORTAL], chap=("chapuser", PASSWORD))
    registry = VolumeDriverRegistry(host)
    guest = make_guest(persistent=True)
    info = chap_info()
    result = attach.attach_volume(host, registry, guest, info, bus="scsi", persistent=True)
    assert result.driver == "hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver"
    assert result.portal == PORTAL and result.secret_uuid is None
    link = str(rig.device_path(PORTAL, IQN, 1, "bnx2i"))
    rows = inspect.volume_rows(host, guest)
    assert [(r["dev"], r["source"]) for r in rows] == [(result.dev, link)]
    with pytest.raises(exception.VolumeAlreadyAttached):
        attach.attach_volume(host, registry, guest, chap_info(), bus="scsi")

    del rig.calls[:]
    detached = attach.detach_volume(host, registry, guest, dev=result.dev)
    assert detached.live and detached.persistent
    assert rig.transcript() == ["iscsiadm -m session", f"{node(iface)} --logout",
                                f"{node(iface)} -o delete"]
    assert inspect.volume_rows(host, guest) == []
    rig.assert_nothing_left()


def test_failed_attach_rolls_back_the_login(rig, host, guest, config_fixture, fake_libvirt,
                                            monkeypatch):
    config_fixture.config(group="libvirt", volume_drivers=[ISCSI_DRIVER])
    rig.add_target(IQN, portals=[PORTAL])

    def refuse(*_args, **_kwargs):
        raise exception.LibvirtError(action="attach a device", reason="refused")
    monkeypatch.setattr(host, "attach_device", refuse)
    with pytest.raises(exception.LibvirtError):
        attach.attach_volume(host, VolumeDriverRegistry(host), guest, make_info(), bus="scsi")
    rig.assert_nothing_left()


def test_session_kept_while_another_domain_uses_the_target(rig, host, make_guest,
                                                           config_fixture):
    config_fixture.config(group="libvirt", volume_drivers=[ISCSI_DRIVER])
    rig.add_target(IQN, portals=[PORTAL], luns=(1, 2))
    registry = VolumeDriverRegistry(host)
    first, second = make_guest(), make_guest()
    attach.attach_volume(host, registry, first, make_info(lun=1), bus="scsi")
    attach.attach_volume(host, registry, second, make_info(lun=2), bus="scsi")
    assert len(rig.sessions) == 1  # LUN 2 rode on the session LUN 1 opened

    del rig.calls[:]
    attach.detach_volume(host, registry, first, make_info(lun=1))
    assert rig.transcript() == []  # LUN 2 of the same target is still in use
    assert rig.deleted_disks == [] and len(rig.sessions) == 1
    assert (rig.sysfs / "block" / "sda" / "device" / "delete").read_text() == "1"

    attach.detach_volume(host, registry, second, make_info(lun=2))
    assert rig.transcript()[-2:] == [f"{node('default')} --logout",
                                     f"{node('default')} -o delete"]
    rig.assert_nothing_left()


def test_multiattach_keeps_everything_until_the_last_domain(rig, host, make_guest,
                                                           config_fixture, caplog):
    config_fixture.config(group="libvirt", volume_drivers=[ISCSI_DRIVER])
    rig.add_target(IQN, portals=[PORTAL])
    registry = VolumeDriverRegistry(host)
    first, second = make_guest(), make_guest()
    for guest in (first, second):
        attach.attach_volume(host, registry, guest, make_info(multiattach=True), bus="scsi")
    del rig.calls[:]
    with caplog.at_level(logging.INFO, logger=base.__name__):
        attach.detach_volume(host, registry, first, make_info())
    assert rig.calls == [] and second in caplog.text
    assert not (rig.sysfs / "block" / "sda" / "device" / "delete").exists()
    attach.detach_volume(host, registry, second, make_info())
    rig.assert_nothing_left()


def test_hvplug_attach_and_detach_commands(rig, guest, tmp_path, capsys):
    """The CLI, with volume_drivers mapping iscsi to this driver and an offload iface."""
    from hvplug.cli import main as cli

    iface = rig.use_iface("cxgb4i")
    rig.add_target(IQN, portals=[PORTAL], chap=("chapuser", PASSWORD))
    conf = tmp_path / "hvplug.conf"
    conf.write_text(f"[libvirt]\nvolume_drivers = {ISCSI_DRIVER}\niscsi_iface = {iface}\n")
    info_file = tmp_path / "info.json"
    info_file.write_text(json.dumps(chap_info()))
    rc = cli.main(["--config-file", str(conf), "attach", "--domain", guest,
                   "--connection-info", str(info_file), "--bus", "scsi", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["driver"] == "hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver"
    assert [s.iface for s in rig.sessions] == [iface]
    assert PASSWORD not in out + err

    rc = cli.main(["--config-file", str(conf), "detach", "--domain", guest, "--dev", "sda"])
    assert rc == 0, capsys.readouterr().err
    rig.assert_nothing_left()


# -- node record files and the real iscsiadm ------------------------------------------------

def test_with_settings_replaces_in_place_and_adds_before_the_end():
    text = ("# BEGIN RECORD 2.1.8\nnode.name = iqn.x\nnode.session.auth.authmethod = None\n"
            "node.conn[0].port = 3260\n# END RECORD\n")
    assert iscsiadm.with_settings(text, {"node.session.auth.authmethod": "CHAP",
                                         "node.session.auth.username": "u"}) == (
        "# BEGIN RECORD 2.1.8\nnode.name = iqn.x\nnode.session.auth.authmethod = CHAP\n"
        "node.conn[0].port = 3260\nnode.session.auth.username = u\n# END RECORD\n")


def test_node_records_refuse_multiline_values_and_missing_records(tmp_path):
    records = iscsiadm.NodeRecords(str(tmp_path))
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        records.update(IQN, "10.0.0.1", 3260, "default", {"k": "a\nnode.startup = x"})
    assert "a\nnode" not in str(err.value)
    with pytest.raises(exception.NodeRecordNotFound):
        records.update(IQN, "10.0.0.1", 3260, "default", {"k": "v"})


def test_node_records_match_the_iface(tmp_path):
    static = tmp_path / IQN / "10.0.0.1,3260"
    static.parent.mkdir(parents=True)
    static.write_text("iface.iscsi_ifacename = iser\n")
    discovered = tmp_path / IQN / "10.0.0.1,3260,1" / "default"
    discovered.parent.mkdir()
    discovered.write_text("# END RECORD\n")
    os.chmod(discovered, 0o644)
    records = iscsiadm.NodeRecords(str(tmp_path))
    assert records.paths(IQN, "10.0.0.1", 3260, "iser") == [static]
    assert records.update(IQN, "10.0.0.1", 3260, "default", {"a": "b"}) == [discovered]
    assert discovered.stat().st_mode & 0o777 == 0o600


REAL_IQN = "iqn.2000-01.com.example:hvplug-unit-probe"


@pytest.mark.skipif(not shutil.which("iscsiadm") or os.geteuid() != 0,
                    reason="needs open-iscsi's iscsiadm, as root")
def test_real_iscsiadm_reads_the_chap_we_write():
    """Against /etc/iscsi/nodes: the record file we edit is one iscsiadm reads back.

    Only record files are touched (no login is possible here); the probe
    record is deleted again, and so is /etc/iscsi/nodes if it was not there.
    """
    nodes = Path(iscsiadm.NODES_DIR)
    had_nodes = nodes.exists()

    def real(*args):
        return subprocess.run(["iscsiadm", *args], check=False, capture_output=True, text=True, timeout=30)
    try:
        for portal, iface in (("127.0.0.1:3260", "default"), ("[::1]:3260", "iser")):
            assert real("-m", "node", "-o", "new", "-T", REAL_IQN, "-p", portal,
                        "-I", iface).returncode == 0
            host, port = portal.rsplit(":", 1)
            settings = iscsi.auth_settings({
                "auth_method": "CHAP", "auth_username": "probe-user",
                "auth_password": "pr0be pass#word", "auth_username_in": "probe-in",
                "auth_password_in": "in-secret"})
            (path,) = iscsiadm.NodeRecords().update(REAL_IQN, host.strip("[]"), int(port),
                                                    iface, settings)
            assert path.stat().st_mode & 0o777 == 0o600
            shown = real("-m", "node", "-T", REAL_IQN, "-p", portal, "-I", iface,
                         "-o", "show", "-S").stdout
            for key, value in settings.items():
                assert f"{key} = {value}\n" in shown
    finally:
        real("-m", "node", "-T", REAL_IQN, "-o", "delete")
        if not had_nodes and nodes.exists() and not any(nodes.iterdir()):
            nodes.rmdir()
    assert not (nodes / REAL_IQN).exists()


def test_session_listing_any_transport_prefix():
    text = "".join(f"{t}: [{n}] 10.0.0.1:3260,1 {IQN} (non-flash)\n"
                   for n, t in enumerate(("tcp", "iser", *OFFLOAD), start=1))
    text += f"tcp: [20] [2001:db8::1]:3260,1 {IQN} (non-flash)\n"
    sessions = iscsiadm.parse_sessions(text)
    assert [s.transport for s in sessions] == ["tcp", "iser", *OFFLOAD, "tcp"]
    assert sessions[-1].reaches("2001:0db8::1", 3260, IQN.upper())


def test_session_match_without_sysfs_ifacename_uses_the_transport(tmp_path, host):
    """Kernels that do not show a session's iface: the iface name's transport decides."""
    listing = (f"tcp: [1] 10.0.0.1:3260,1 {IQN} (non-flash)\n"
               f"cxgb4i: [2] 10.0.0.1:3260,1 {IQN} (non-flash)\n")
    driver = LibvirtISCSIVolumeDriver(host, execute=lambda *cmd, **kw: (listing, ""),
                                      sysfs_root=str(tmp_path), dev_root=str(tmp_path))
    target = ISCSITarget("10.0.0.1", 3260, IQN, 1)
    connector = driver.connector
    assert connector._session(target, f"cxgb4i.{HWADDRESS}").sid == 2
    assert connector._session(target, "default").sid == 1
    assert connector._session(target, "iser") is None


def test_cli_import_path_does_not_import_os_brick():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import hvplug.cli.main, hvplug.virt.volume.iser"],
                         capture_output=True, text=True, check=True).stderr
    assert "hvplug.virt.volume.iser" in out and "os_brick" not in out


def test_default_registry_maps_iser(host):
    assert VolumeDriverRegistry(host, entries=[]).classes["iser"].__name__ == \
        "LibvirtISERVolumeDriver"
