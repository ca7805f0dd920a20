"""The Fibre Channel driver against a fake FC host (sysfs, /dev) and fake executors.

There is no FC hardware here.  Most tests put ``FakeFcConnector`` (same
methods, results and exceptions as os-brick's FibreChannelConnector) at the
driver's ``connector_factory`` seam and check hvplug's own logic; the
``real connector`` tests drive os-brick's FibreChannelConnector itself
against the fake tree, with a recording executor.
"""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hvplug import exception
from hvplug.connection_schema import fc_luns
from hvplug.initiator.connectors import fibre_channel
from hvplug.initiator.connectors.fibre_channel import BrickExecute
from hvplug.virt import attach, inspect
from hvplug.virt.volume import base
from hvplug.virt.volume.fibre_channel import LibvirtFibreChannelVolumeDriver
from tests.fakefcsysfs import SECTORS, FakeFcConnector, FakeFcHost
from tests.xmlcheck import assert_valid_disk

HBA_A, HBA_B = "21000024ff4b9a3c", "21000024ff4b9a3d"
# As the ISE returns them: upper case, one per controller port.
WWNS = ["5001F4A0C0D10001", "5001F4A0C0D10002"]
WWN_A, WWN_B = (w.lower() for w in WWNS)


def ise_info(lun: int = 1, wwns=None, **data) -> dict:
    """``connection_info`` as the ISE FC driver's initialize_connection returns it."""
    wwns = WWNS if wwns is None else wwns
    return {"driver_volume_type": "fibre_channel",
            "data": {"target_discovered": True, "target_wwn": wwns, "target_lun": lun,
                     "initiator_target_map": {HBA_A.upper(): list(WWNS)},
                     "volume_id": "42", **data},
            "serial": "42"}


@pytest.fixture
def fc(tmp_path):
    return FakeFcHost(tmp_path / "fchost")


@pytest.fixture
def connectors(fc, tmp_path, monkeypatch):
    """Every connector the driver makes; the class's roots point at the fake tree.

    Patching the class (not only passing roots) is what lets the registry's
    drivers and the classmethods (handles_disk) see the fake trees.
    """
    made: list[tuple[FakeFcConnector, tuple]] = []

    def factory(execute, use_multipath, scan_tries, lock_dir):
        connector = FakeFcConnector(fc, use_multipath)
        made.append((connector, (use_multipath, scan_tries, lock_dir)))
        return connector

    monkeypatch.setattr(LibvirtFibreChannelVolumeDriver, "connector_factory",
                        staticmethod(factory))
    monkeypatch.setattr(LibvirtFibreChannelVolumeDriver, "sysfs_root", str(fc.sys))
    monkeypatch.setattr(LibvirtFibreChannelVolumeDriver, "dev_root", str(fc.dev))
    monkeypatch.setattr(LibvirtFibreChannelVolumeDriver, "lock_dir", str(tmp_path / "locks"))
    return made


@pytest.fixture
def zoned(fc):
    """One HBA that sees LUN 1 through both ISE ports."""
    fc.add_hba(5, HBA_A)
    fc.add_target_port(5, 0, 0, WWN_A)
    fc.add_target_port(5, 0, 1, WWN_B)
    return fc.zone(WWN_A, 1) + fc.zone(WWN_B, 1)


def calls(connectors) -> list[str]:
    return [name for connector, _ in connectors for name, _ in connector.calls]


# -- connect, disk, disconnect ----------------------------------------------------------

def test_ise_connection_info_consumed_unchanged(host, connectors, zoned, tmp_path):
    driver, info = LibvirtFibreChannelVolumeDriver(host), ise_info()
    original = copy.deepcopy(info)
    device = driver.connect_volume(info, "guest").device

    (connector, (multipath, tries, lock_dir)), = connectors
    assert connector.calls == [("connect_volume", original["data"])]
    assert (multipath, tries) == (False, 3)  # [libvirt] defaults
    assert lock_dir == str(tmp_path / "locks")
    assert device.path == str(zoned[0])
    assert device.path.endswith(f"/disk/by-path/pci-0000:05:00.2-fc-0x{WWN_A}-lun-1")
    assert device.multipath is False and device.scsi_wwn
    # What the array sent is still there as sent (os-brick rewrote only its own copy).
    assert info == original


def test_get_config_is_a_native_block_disk(host, connectors, zoned):
    driver, info = LibvirtFibreChannelVolumeDriver(host), ise_info()
    connection = driver.connect_volume(info, "guest")
    xml = driver.get_config(connection, {"dev": "sdb", "bus": "scsi"}).to_xml()
    assert_valid_disk(xml)
    assert "type=\"block\"" in xml and f'dev="{zoned[0]}"' in xml
    assert 'cache="none"' in xml and 'io="native"' in xml and "<serial>42</serial>" in xml


@pytest.mark.parametrize("wwns", ["5001F4A0C0D10001", "0x5001f4a0c0d10001"],
                         ids=["string", "0x-prefixed"])
def test_single_string_target_wwn(host, connectors, zoned, wwns):
    info = ise_info(wwns=wwns)
    connection = LibvirtFibreChannelVolumeDriver(host).connect_volume(info, "guest")
    assert info["data"]["target_wwn"] == wwns
    assert connection.device.path == str(zoned[0])


def test_target_wwns_and_luns_are_paired():
    assert fc_luns({"target_wwns": WWNS, "target_luns": [3, 4]}) == [(WWN_A, 3), (WWN_B, 4)]
    assert fc_luns({"target_wwn": WWNS, "target_lun": 0}) == [(WWN_A, 0), (WWN_B, 0)]


@pytest.mark.parametrize(("data", "reason"), [
    ({"target_lun": 1}, "data.target_wwn is missing"),
    ({"target_wwn": WWNS}, "data.target_lun is missing"),
    ({"target_wwn": WWNS, "target_lun": "1"}, "data.target_lun must be int"),
    ({"target_wwn": ["5001"], "target_lun": 1}, "'5001' is not a 16-hex-digit"),
    ({"target_wwn": [], "target_lun": 1}, "data.target_wwn is empty"),
    ({"target_wwns": WWNS, "target_luns": [1, 2, 3]}, "2 target WWNs but 3 LUNs"),
])
def test_bad_connection_info(host, connectors, zoned, data, reason):
    info = {"driver_volume_type": "fibre_channel", "data": data}
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        LibvirtFibreChannelVolumeDriver(host).connect_volume(info, "guest")
    assert reason in str(err.value) and err.value.exit_code == 2
    assert connectors == []


def test_multipath_device(host, connectors, zoned, fc, config_fixture):
    config_fixture.config(group="libvirt", fc_use_multipath=True)
    mapper = fc.multipath(zoned)
    driver, info = LibvirtFibreChannelVolumeDriver(host), ise_info()
    connection = driver.connect_volume(info, "guest")
    assert connectors[0][1][0] is True
    assert connection.device.path == str(mapper) and connection.device.multipath is True
    disk = driver.get_config(connection, {"dev": "sdb", "bus": "scsi"})
    assert disk.source_path == str(mapper)
    # The map is recognised as this volume, and rebuilt into connection_info.
    assert driver.is_same_volume(disk, ise_info())
    rebuilt = LibvirtFibreChannelVolumeDriver.connection_info_from_disk(disk)["data"]
    assert rebuilt["target_wwn"] == [WWN_A, WWN_B] and rebuilt["target_lun"] == 1


def test_attach_and_detach_through_the_registry(host, registry, guest, connectors, zoned, fc):
    result = attach.attach_volume(host, registry, guest, ise_info(), bus="scsi")
    assert result.driver.endswith("fibre_channel.LibvirtFibreChannelVolumeDriver")
    (row,) = inspect.volume_rows(host, guest)
    assert row["source"] == str(zoned[0]) and row["dev"] == result.dev

    attach.detach_volume(host, registry, guest, ise_info())
    assert calls(connectors) == ["connect_volume", "disconnect_volume"]
    assert fc.deleted_disks() == ["sda", "sdb"] and fc.links() == []


def test_detach_by_dev_rebuilds_connection_info(host, registry, guest, connectors, zoned, fc):
    result = attach.attach_volume(host, registry, guest, ise_info(), bus="scsi")
    attach.detach_volume(host, registry, guest, dev=result.dev)
    (connector, _), = connectors
    name, props = connector.calls[-1]
    assert name == "disconnect_volume"
    assert props["target_wwn"] == [WWN_A, WWN_B] and props["target_lun"] == 1
    assert fc.links() == []


def test_disconnect_skipped_while_another_domain_uses_the_lun(
        host, registry, make_guest, connectors, zoned, fc, caplog):
    first, second = make_guest(), make_guest()
    for guest in (first, second):
        attach.attach_volume(host, registry, guest, ise_info(multiattach=True), bus="scsi")
    with caplog.at_level("INFO", logger=base.__name__):
        attach.detach_volume(host, registry, first, ise_info())
    assert calls(connectors) == ["connect_volume", "connect_volume"]
    assert second in caplog.text and fc.deleted_disks() == []

    attach.detach_volume(host, registry, second, ise_info())
    assert calls(connectors)[-1] == "disconnect_volume"
    assert fc.links() == []


def test_other_luns_do_not_keep_a_lun(host, registry, make_guest, connectors, zoned, fc):
    fc.zone(WWN_A, 2)
    first, second = make_guest(), make_guest()
    attach.attach_volume(host, registry, first, ise_info(lun=1), bus="scsi")
    attach.attach_volume(host, registry, second, ise_info(lun=2), bus="scsi")
    attach.detach_volume(host, registry, first, ise_info(lun=1))
    assert calls(connectors)[-1] == "disconnect_volume"
    assert fc.links() == [fc.link_name(5, WWN_A, 2)]


def test_extend_rescans_then_resizes(host, registry, guest, connectors, zoned, fc):
    result = attach.attach_volume(host, registry, guest, ise_info(), bus="scsi")
    fc.grow(WWN_A, 1, 2 * SECTORS)
    driver = registry.driver_for(ise_info())
    size = driver.extend_volume(ise_info(), guest, result.dev, 2 * SECTORS * 512)
    assert size == 2 * SECTORS * 512
    assert calls(connectors)[-1] == "extend_volume"
    assert host.block_capacity(guest, result.dev) == size


def test_cli_attach_list_detach(host, guest, connectors, zoned, fc, tmp_path, capsys):
    """fibre_channel is a default type: no volume_drivers entry is needed."""
    from hvplug.cli import main as cli

    info_file = tmp_path / "info.json"
    info_file.write_text(json.dumps(ise_info()))
    rc = cli.main(["attach", "--domain", guest, "--connection-info", str(info_file),
                   "--bus", "scsi", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    dev = json.loads(out)["dev"]
    assert cli.main(["list", "--domain", guest, "--json"]) == 0
    assert str(zoned[0]) in capsys.readouterr().out
    assert cli.main(["detach", "--domain", guest, "--dev", dev]) == 0, capsys.readouterr().err
    assert fc.links() == [] and calls(connectors)[-1] == "disconnect_volume"


def test_handles_only_fc_block_disks(connectors, zoned, fc):
    from hvplug.virt import config

    def disk(path):
        d = config.LibvirtConfigGuestDisk()
        d.source_type, d.source_path = "block", path
        return d
    iscsi_link = fc.by_path / "ip-10.0.0.1:3260-iscsi-iqn.2010-10.org.x:v-lun-1"
    assert LibvirtFibreChannelVolumeDriver.handles_disk(disk(str(zoned[1])))
    assert not LibvirtFibreChannelVolumeDriver.handles_disk(disk(str(iscsi_link)))
    assert not LibvirtFibreChannelVolumeDriver.handles_disk(disk(str(fc.dev / "sda")))
    info = LibvirtFibreChannelVolumeDriver.connection_info_from_disk(disk(str(zoned[1])))
    # the LUN's other path (same wwid) is found too, so a detach removes both
    assert info["data"] == {"target_wwn": [WWN_A, WWN_B], "target_lun": 1,
                            "target_discovered": True, "device_path": str(zoned[1])}
    (fc.sys / "block" / "sdb" / "device" / "wwid").unlink()  # a kernel without wwid
    info = LibvirtFibreChannelVolumeDriver.connection_info_from_disk(disk(str(zoned[1])))
    assert info["data"]["target_wwn"] == [WWN_B]


# -- errors -------------------------------------------------------------------------------

def test_no_hba_names_the_fix(host, connectors, fc):
    with pytest.raises(exception.FibreChannelNoHBA) as err:
        LibvirtFibreChannelVolumeDriver(host).connect_volume(ise_info(), "guest")
    message = str(err.value)
    assert str(fc.sys / "class" / "fc_host") in message and "modprobe" in message
    assert WWN_A in message and "LUN 1" in message
    assert connectors == []  # os-brick is not even set up


def test_lun_not_zoned_names_the_wwpns(host, connectors, fc):
    fc.add_hba(5, HBA_A)
    fc.add_hba(6, HBA_B, pci="0000:05:00.3")
    info = ise_info()
    with pytest.raises(exception.FibreChannelDeviceNotFound) as err:
        LibvirtFibreChannelVolumeDriver(host).connect_volume(info, "guest")
    assert f"{HBA_A}, {HBA_B}" in str(err.value) and "zoning" in str(err.value)
    assert info == ise_info()


def test_unknown_initiators_are_warned_about(host, connectors, fc, caplog):
    fc.add_hba(5, HBA_B)
    fc.zone(WWN_A, 1)
    info = ise_info()
    LibvirtFibreChannelVolumeDriver(host).connect_volume(info, "guest")
    assert "none of this host's WWPNs" in caplog.text and HBA_B in caplog.text


def test_other_os_brick_errors_are_wrapped(host, connectors, zoned):
    from os_brick import exception as brick

    driver = LibvirtFibreChannelVolumeDriver(host)
    connection = driver.connect_volume(ise_info(), "guest")
    connector = connectors[0][0]

    def fail(*args, **kwargs):
        raise brick.BrickException("multipath -f mpatha failed")
    connector.disconnect_volume = fail
    with pytest.raises(exception.FibreChannelFailed) as err:
        driver.disconnect_volume(connection, "gone")
    assert "could not disconnect: multipath -f mpatha failed" in str(err.value)


def test_os_brick_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "os_brick", None)
    with pytest.raises(exception.OsBrickMissing) as err:
        fibre_channel.prepare_os_brick(str(tmp_path))
    assert "pip install 'hvplug[fc]'" in str(err.value)


# -- os-brick set-up and the executor adapter -----------------------------------------------

def _python(code: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def test_importing_hvplug_does_not_import_os_brick():
    code = ("import sys, hvplug.cli.main, hvplug.virt.volume.fibre_channel\n"
            "import hvplug.initiator.connectors.fibre_channel\n"
            "from hvplug.virt.volume.registry import load\n"
            "load([])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('os_brick', 'oslo_privsep', 'oslo_concurrency')))")
    assert _python(code).strip() == "[]"


SETUP = """
import json, os, sys
from hvplug.conf import CONF
CONF(sys.argv[2:], project="hvplug", default_config_files=[])
from hvplug.initiator.connectors import fibre_channel
fibre_channel.prepare_os_brick(sys.argv[1])
from os_brick import privileged
print(json.dumps({"oslo": CONF.oslo_concurrency.lock_path, "brick": CONF.os_brick.lock_path,
                  "client_mode": privileged.default.client_mode
                  or privileged.brick_privsep_hide_output.client_mode,
                  "mode": oct(os.stat(sys.argv[1]).st_mode & 0o777)
                  if os.path.exists(sys.argv[1]) else None}))
"""


def test_lock_path_and_privsep_set_up(tmp_path):
    locks = tmp_path / "var" / "lib" / "hvplug" / "locks"
    got = json.loads(_python(SETUP, str(locks)))
    assert got == {"oslo": str(locks), "brick": str(locks), "client_mode": False,
                   "mode": "0o700"}


def test_configured_lock_path_wins(tmp_path):
    conf = tmp_path / "hvplug.conf"
    conf.write_text(f"[oslo_concurrency]\nlock_path = {tmp_path / 'mine'}\n")
    got = json.loads(_python(SETUP, str(tmp_path / "unused"), "--config-file", str(conf)))
    assert got["oslo"] == got["brick"] == str(tmp_path / "mine")
    assert got["mode"] is None  # the default directory was not made


class Recorder:
    def __init__(self, fail_status=None):
        self.calls, self.kwargs, self.fail_status = [], [], fail_status

    def __call__(self, *cmd, **kwargs):
        self.calls.append(cmd)
        self.kwargs.append(kwargs)
        if self.fail_status is not None and self.fail_status not in kwargs["check_exit_code"]:
            raise exception.ProcessExecutionError(cmd=cmd[0], status=self.fail_status,
                                                  stderr="boom", stdout="out")
        return "ok", ""


def test_brick_execute_maps_processutils_arguments():
    rec = Recorder()
    run = BrickExecute(rec)
    assert run("tee", "-a", "/sys/class/scsi_host/host5/scan", process_input="0 1 1",
               run_as_root=True, root_helper=None) == ("ok", "")
    run('grep -Gil "5001" /sys/class/fc_transport/target5:*/port_name', shell=True)  # noqa: S604 - os-brick's form
    run("multipath", "-l", check_exit_code=[0, 1, 21])
    run("blockdev", check_exit_code=False)
    assert rec.calls == [("tee", "-a", "/sys/class/scsi_host/host5/scan"),
                         ("sh", "-c",
                          'grep -Gil "5001" /sys/class/fc_transport/target5:*/port_name'),
                         ("multipath", "-l"), ("blockdev",)]
    assert rec.kwargs[0]["input"] == "0 1 1" and rec.kwargs[0]["check_exit_code"] == (0,)
    assert rec.kwargs[2]["check_exit_code"] == (0, 1, 21)
    assert len(rec.kwargs[3]["check_exit_code"]) == 256
    assert all(0 < kw["timeout"] < float("inf") for kw in rec.kwargs)


def test_brick_execute_raises_what_os_brick_catches():
    from oslo_concurrency import processutils

    with pytest.raises(processutils.ProcessExecutionError) as err:
        BrickExecute(Recorder(fail_status=3))("scsi_id", "--page", "0x83")
    assert err.value.exit_code == 3 and err.value.stderr == "boom"
    assert err.value.cmd == "scsi_id --page 0x83"


# -- os-brick's real FibreChannelConnector against the fake tree ------------------------------

class PathShim:
    """``os`` for an os-brick module: /dev and /sys paths looked up in the fake tree."""

    def __init__(self, fc: FakeFcHost):
        self.roots = (("/dev/", f"{fc.dev}/"), ("/sys/", f"{fc.sys}/"))
        self.path = self

    def __getattr__(self, name):  # the rest of os and os.path, unchanged
        return getattr(os.path, name, None) or getattr(os, name)

    def _fake(self, path: str) -> str:
        for real, fake in self.roots:
            if path.startswith(real):
                return fake + path[len(real):]
        return path

    def _real(self, path: str) -> str:
        for real, fake in self.roots:
            if path.startswith(fake):
                return real + path[len(fake):]
        return path

    def exists(self, path: str) -> bool:
        return os.path.exists(self._fake(path))

    def islink(self, path: str) -> bool:
        return os.path.islink(self._fake(path))

    def realpath(self, path: str) -> str:
        return self._real(os.path.realpath(self._fake(path)))

    def readlink(self, path: str) -> str:
        return os.readlink(self._fake(path))


class BrickRig(Recorder):
    """The executor os-brick's commands reach, as this host's kernel and tools would answer.

    dd and scsi_id succeed; multipathd is not running; os-brick's shell
    ``grep`` over /sys runs for real against the fake tree; a write to an
    HBA's ``scan`` file brings up the LUNs set in ``on_scan``.
    """

    def __init__(self, fc: FakeFcHost):
        super().__init__()
        self.fc = fc
        self.on_scan: list[tuple[str, int]] = []

    def __call__(self, *cmd, **kwargs):
        super().__call__(*cmd, **kwargs)
        if cmd[0] == "dd":
            return "", "1+0 records in\n1+0 records out\n"
        if cmd[0] == "/lib/udev/scsi_id":
            return "36001f4a0c0d1000100000000\n", ""
        if cmd[:2] == ("multipathd", "show"):
            raise exception.ProcessExecutionError(cmd="multipathd", status=1,
                                                  stderr="not running")
        if cmd[:2] == ("sh", "-c"):
            fake = cmd[2].replace("/sys/", f"{self.fc.sys}/")
            out = subprocess.run(["sh", "-c", fake], capture_output=True, text=True,
                                 check=False, timeout=10).stdout
            return out.replace(f"{self.fc.sys}/", "/sys/"), ""
        if cmd[0] == "tee" and cmd[-1].endswith("/device/delete"):
            self._delete(cmd[-1].split("/")[3])
        if cmd[0] == "tee" and cmd[-1].endswith("/rescan"):
            self._rescan(cmd[-1].split("/")[-2])
        if cmd[0] == "lsscsi":
            return "".join(f"[{hctl}]  disk  XIO  ISE  3.2  /dev/{disk}\n"
                           for hctl, disk in self._disks().items()), ""
        if cmd[:2] == ("blockdev", "--getsize64"):
            disk = os.path.realpath(self.fc.dev / cmd[2][len("/dev/"):])
            return f"{os.path.getsize(disk)}\n", ""
        if cmd[0] == "tee" and cmd[-1].endswith("/scan"):
            for wwn, lun in self.on_scan:
                self.fc.zone(wwn, lun)
            self.on_scan = []
        return "", ""

    def _disks(self) -> dict[str, str]:
        """host:channel:target:lun -> sdX, from the HBAs, target ports and links."""
        found = {}
        for link in sorted(self.fc.by_path.iterdir()):
            pci, wwn, lun = re.match(r"pci-(.+)-fc-0x(\w+)-lun-(\d+)$", link.name).groups()
            host_no = next(h for h, (_, p) in self.fc.hbas.items() if p == pci)
            for port in self.fc.sys.glob(f"class/fc_transport/target{host_no}:*/port_name"):
                if port.read_text().strip() == f"0x{wwn}":
                    channel_target = port.parent.name.split(":", 1)[1]
                    found[f"{host_no}:{channel_target}:{lun}"] = Path(
                        os.path.realpath(link)).name
        return found

    def _rescan(self, hctl: str) -> None:
        """The kernel re-reads the LUN's capacity."""
        disk = self._disks()[hctl]
        link = next(p for p in self.fc.by_path.iterdir()
                    if Path(os.path.realpath(p)).name == disk)
        wwn, lun = re.search(r"-fc-0x(\w+)-lun-(\d+)$", link.name).groups()
        sectors = self.fc.sizes.get((wwn, int(lun)), SECTORS)
        (self.fc.sys / "block" / disk / "size").write_text(f"{sectors}\n")
        os.truncate(self.fc.dev / disk, sectors * 512)

    def _delete(self, disk: str) -> None:
        """The kernel drops the disk; udev removes its links."""
        (self.fc.sys / "block" / disk / "device" / "delete").write_text("1\n")
        for link in self.fc.by_path.iterdir():
            if Path(os.path.realpath(link)).name == disk:
                link.unlink()


@pytest.fixture
def real_brick(fc, tmp_path, monkeypatch):
    """os-brick's own connector, reading the fake tree, commands into a BrickRig."""
    from os_brick.initiator import linuxfc, linuxscsi
    from os_brick.initiator.connectors import fibre_channel as brick_fc
    from os_brick.privileged import rootwrap
    from oslo_service import loopingcall

    class NoWait(loopingcall.FixedIntervalLoopingCall):
        """os-brick's rescan loop without its 2-second pauses."""

        def start(self, interval, **kwargs):
            return super().start(interval=0, **kwargs)

    rig = BrickRig(fc)
    monkeypatch.setattr(brick_fc.loopingcall, "FixedIntervalLoopingCall", NoWait)
    monkeypatch.setattr(linuxfc.LinuxFibreChannel, "FC_HOST_SYSFS_PATH",
                        str(fc.sys / "class" / "fc_host"))
    for module in (brick_fc, linuxscsi):
        monkeypatch.setattr(module, "os", PathShim(fc))
    # multipathd status goes to privsep, not to the injected execute (see the reference)
    monkeypatch.setattr(rootwrap, "execute", BrickExecute(rig))
    monkeypatch.setattr(LibvirtFibreChannelVolumeDriver, "sysfs_root", str(fc.sys))
    monkeypatch.setattr(LibvirtFibreChannelVolumeDriver, "dev_root", str(fc.dev))
    monkeypatch.setattr(LibvirtFibreChannelVolumeDriver, "lock_dir", str(tmp_path / "locks"))
    return rig


def test_real_connector_connects_the_by_path_device(host, real_brick, zoned, fc, tmp_path):
    driver, info = LibvirtFibreChannelVolumeDriver(host, execute=real_brick), ise_info()
    device = driver.connect_volume(info, "guest").device
    link = f"/dev/disk/by-path/pci-0000:05:00.2-fc-0x{WWN_A}-lun-1"
    assert device.path == link
    assert device.scsi_wwn == "36001f4a0c0d1000100000000"
    assert ("dd", f"if={link}", "of=/dev/null", "count=1") in real_brick.calls
    assert ("/lib/udev/scsi_id", "--page", "0x83", "--whitelisted", link) in real_brick.calls
    assert not [c for c in real_brick.calls if "scan" in " ".join(c)]  # found at once
    assert info["data"]["target_wwn"] == WWNS  # os-brick lower-cased only its copy
    assert (tmp_path / "locks").stat().st_mode & 0o777 == 0o700


def test_real_connector_rescans_the_zoned_hba(host, real_brick, fc):
    """The LUN shows up only after os-brick writes "channel target lun" to the HBA's scan."""
    fc.add_hba(5, HBA_A)
    fc.add_hba(6, HBA_B, pci="0000:05:00.3")  # not in initiator_target_map: not scanned
    fc.add_target_port(5, 0, 1, WWN_A)
    fc.add_target_port(6, 0, 1, WWN_A)
    real_brick.on_scan = [(WWN_A, 1)]
    info = ise_info(wwns=WWNS[0])
    connection = LibvirtFibreChannelVolumeDriver(host, execute=real_brick).connect_volume(
        info, "guest")
    scans = [(c, kw["input"]) for c, kw in zip(real_brick.calls, real_brick.kwargs, strict=True)
             if c[0] == "tee"]
    assert scans == [(("tee", "-a", "/sys/class/scsi_host/host5/scan"), "0 1 1")]
    assert connection.device.path.endswith(f"-fc-0x{WWN_A}-lun-1")


def test_real_connector_gives_up_after_the_scan_tries(host, real_brick, fc, config_fixture):
    config_fixture.config(group="libvirt", num_fc_scan_tries=2)
    fc.add_hba(5, HBA_A)
    fc.add_target_port(5, 0, 1, WWN_A)
    with pytest.raises(exception.FibreChannelDeviceNotFound) as err:
        LibvirtFibreChannelVolumeDriver(host, execute=real_brick).connect_volume(
            ise_info(wwns=WWNS[0]), "guest")
    assert HBA_A in str(err.value) and "zoning" in str(err.value)
    assert [c[0] for c in real_brick.calls].count("tee") == 2


def test_real_connector_disconnect_removes_every_path(host, real_brick, zoned, fc):
    driver, info = LibvirtFibreChannelVolumeDriver(host, execute=real_brick), ise_info()
    connection = driver.connect_volume(info, "guest")
    del real_brick.calls[:], real_brick.kwargs[:]
    driver.disconnect_volume(connection, "guest")
    writes = [(c[-1], kw["input"]) for c, kw in zip(real_brick.calls, real_brick.kwargs,
                                                    strict=True) if c[0] == "tee"]
    assert writes == [("/sys/block/sda/device/delete", "1"),
                      ("/sys/block/sdb/device/delete", "1")]
    assert ("blockdev", "--flushbufs", "/dev/sda") in real_brick.calls  # the path in use
    assert fc.links() == []


class ResizeRecorder:
    """The Host as extend_volume sees it (the by-path names here are not real files)."""

    def __init__(self):
        self.resized = []

    def block_resize(self, domain, dev, size):
        self.resized.append((domain, dev, size))


def test_real_connector_extend(real_brick, zoned, fc):
    host = ResizeRecorder()
    driver, info = LibvirtFibreChannelVolumeDriver(host, execute=real_brick), ise_info()
    driver.connect_volume(info, "guest")
    fc.grow(WWN_A, 1, 2 * SECTORS)
    fc.grow(WWN_B, 1, 2 * SECTORS)
    del real_brick.calls[:], real_brick.kwargs[:]
    size = driver.extend_volume(info, "guest", "sdb", 2 * SECTORS * 512)
    assert size == 2 * SECTORS * 512 and host.resized == [("guest", "sdb", size)]
    rescans = [c[-1] for c in real_brick.calls if c[0] == "tee"]
    assert rescans == ["/sys/bus/scsi/drivers/sd/5:0:0:1/rescan",
                       "/sys/bus/scsi/drivers/sd/5:0:1:1/rescan"]
