"""``hvplug volume --backend B ...`` in-process against the simulated ISE."""

import io
import json
import signal
import subprocess
import sys

import pytest

from hvplug.cli import main as cli
from hvplug.initiator.connectors.base import connector_properties
from hvplug.utils.executor import execute as real_execute  # before the fake replaces it
from tests import stack
from tests.unit.drivers.xio import HOST_IQN, PASSWORD, TOOLS, SimulatedISE, write_config


@pytest.fixture
def ise(tmp_path):
    sim = SimulatedISE(tmp_path / "ise").start()
    yield sim
    sim.stop()


@pytest.fixture
def make_run(tmp_path, capsys, monkeypatch):
    def make(ise, **options):
        conf = write_config(tmp_path / "hvplug.conf", ise.port, **options)
        with conf.open("a") as f:
            f.write(f"[libvirt]\niscsi_initiator_name = {HOST_IQN}\n")

        def invoke(*argv, stdin=None):
            if stdin is not None:
                monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
            rc = cli.main(["--config-file", str(conf), *argv])
            out, err = capsys.readouterr()
            assert PASSWORD not in out + err
            return rc, out, err
        return invoke
    return make


@pytest.fixture
def run(make_run, ise):
    def volume(*argv, backend="ise1"):
        return make_run(ise)("volume", "--backend", backend, *argv)
    return volume


def test_volume_lifecycle(run, ise):
    rc, out, err = run("create", "vol1", "--size", "2", "--json")
    assert rc == 0, err
    assert json.loads(out)["status"] == "OPERATIONAL"
    assert run("snapshot-create", "vol1", "snap1")[0] == 0
    assert run("create-from-snapshot", "snap1", "vol2")[0] == 0
    assert run("clone", "vol1", "vol3")[0] == 0
    rc, out, _ = run("extend", "vol3", "--size", "5", "--json")
    assert json.loads(out)["size_gb"] == 5
    rc, out, _ = run("stats", "--json")
    stats = json.loads(out)
    assert stats["vendor_name"] == "X-IO"
    assert stats["free_capacity_gb"] == 200 - 2 * (2 + 2 + 2 + 5)
    rc, out, _ = run("stats")
    assert "pool Pool 1: 78.0 of 100.0 GB free" in out
    for name in ("vol3", "vol2", "vol1"):
        assert run("delete", name)[0] == 0
    rc, out, _ = run("snapshot-delete", "snap1", "--json")
    assert json.loads(out) == {"name": "snap1", "deleted": True}
    assert ise.state()["volumes"] == {}


def test_connection_info_defaults_to_this_hosts_initiator(run, ise):
    run("create", "vol1", "--size", "1")
    rc, out, err = run("connection-info", "vol1")
    assert rc == 0, err
    info = json.loads(out)
    assert info["data"]["target_lun"] == 1
    assert info["data"]["auth_password"] == ise.array.chap()["password"]
    [host] = ise.state()["hosts"].values()
    assert host["endpoints"] == [HOST_IQN]
    rc, out, _ = run("terminate-connection", "vol1", "--initiator", HOST_IQN)
    assert rc == 0 and ise.state()["hosts"] == {}


def test_fc_connection_info_with_wwpns(make_run, ise):
    run = make_run(ise, driver="fc.XIOFCDriver")
    run("volume", "--backend", "ise1", "create", "vol1", "--size", "1")
    rc, out, err = run("volume", "--backend", "ise1", "connection-info", "vol1",
                       "--wwpn", "21:00:00:24:ff:3a:1b:2c", "--wwpn", "21000024ff3a1b2d")
    assert rc == 0, err
    data = json.loads(out)["data"]
    assert sorted(data["initiator_target_map"]) == ["21000024ff3a1b2c", "21000024ff3a1b2d"]
    rc, _, _ = run("volume", "--backend", "ise1", "terminate-connection", "vol1",
                   "--wwpn", "21000024ff3a1b2c")
    assert rc == 0 and ise.state()["hosts"] == {}


def test_fc_wwpns_default_to_this_hosts_fc_ports(tmp_path):
    for i, name in enumerate(("0x21000024ff3a1b2c", "0x21000024ff3a1b2d")):
        port = tmp_path / "class" / "fc_host" / f"host{i}"
        port.mkdir(parents=True)
        (port / "port_name").write_text(name + "\n")
        (port / "node_name").write_text(name.replace("0x21", "0x20") + "\n")
    props = connector_properties(sysfs_root=str(tmp_path))
    assert props["wwpns"] == ["21000024ff3a1b2c", "21000024ff3a1b2d"]
    assert props["wwnns"] == ["20000024ff3a1b2c", "20000024ff3a1b2d"]
    assert props["host"]


def test_wwpn_on_an_iscsi_backend_is_bad_input(run):
    run("create", "vol1", "--size", "1")
    rc, _, err = run("connection-info", "vol1", "--wwpn", "21000024ff3a1b2c")
    assert rc == 2 and "--initiator" in err


def test_unknown_backend_is_bad_input(run):
    rc, out, err = run("stats", "--json", backend="gold")
    assert rc == 2 and "known: ise1" in err
    assert json.loads(out)["error"]["type"] == "BackendNotFound"


@pytest.mark.parametrize("argv", [("create", "v", "--size", "0"),
                                  ("extend", "v", "--size", "x")])
def test_bad_size_is_a_usage_error(run, argv):
    with pytest.raises(SystemExit) as exit_:
        run(*argv)
    assert exit_.value.code == 2


def test_missing_volume_fails_with_exit_1(run):
    rc, _, err = run("delete", "nope")
    assert rc == 0  # deleting what is gone is fine
    rc, _, err = run("extend", "nope", "--size", "2")
    assert rc == 1 and "No volume 'nope'" in err


def test_unreachable_array_exit_1_without_the_password(run, ise):
    ise.stop()
    rc, out, err = run("create", "vol1", "--size", "1", "--json")
    assert rc == 1 and "Cannot reach the ISE" in err
    assert json.loads(out)["error"]["exit_code"] == 1


def test_wrong_password_exit_1(make_run, ise):
    run = make_run(ise, san_password="wrong")
    rc, _, err = run("volume", "--backend", "ise1", "stats")
    assert rc == 1 and "san_password" in err and "wrong" not in err


@pytest.mark.stack
def test_connection_info_is_what_hvplug_attach_accepts(make_run, tmp_path, host, guest):
    """create → connection-info → attach (fake libvirt) → detach → terminate → delete,
    with the simulator exporting through the real tgtd."""
    stack.require_tgtd()
    from ise_sim.iscsi import TgtdExporter
    sim = SimulatedISE(tmp_path / "ise2", exporter_factory=TgtdExporter).start()
    try:
        run = make_run(sim)
        assert run("volume", "--backend", "ise1", "create", "vol1", "--size", "1")[0] == 0
        rc, info, err = run("volume", "--backend", "ise1", "connection-info", "vol1")
        assert rc == 0, err
        rc, out, err = run("attach", "--domain", guest, "--connection-info", "-",
                           "--bus", "scsi", "--json", stdin=info)
        assert rc == 0, err
        assert json.loads(out)["portal"] == "127.0.0.1:3260"
        assert run("detach", "--domain", guest, "--dev", "sda")[0] == 0
        assert run("volume", "--backend", "ise1", "terminate-connection", "vol1")[0] == 0
        assert run("volume", "--backend", "ise1", "delete", "vol1")[0] == 0
        assert sim.state()["volumes"] == {} and sim.state()["hosts"] == {}
    finally:
        sim.stop()


@pytest.mark.stack
def test_copy_image_and_copy_to_image(make_run, tmp_path, monkeypatch):
    stack.require_tgtd()
    from ise_sim.iscsi import TgtdExporter

    from hvplug.utils import executor
    monkeypatch.setattr(executor, "execute", real_execute)
    sim = SimulatedISE(tmp_path / "ise3", exporter_factory=TgtdExporter).start()
    try:
        run = make_run(sim)
        image = tmp_path / "in.raw"
        image.write_bytes(b"hvplug" * 100000)
        assert run("volume", "--backend", "ise1", "create", "vol1", "--size", "1")[0] == 0
        rc, out, err = run("volume", "--backend", "ise1", "copy-image", str(image), "vol1",
                           "--json")
        assert rc == 0, err
        assert json.loads(out)["copied"] is True
        rc, _, err = run("volume", "--backend", "ise1", "copy-to-image", "vol1",
                         str(tmp_path / "out.qcow2"), "--format", "qcow2")
        assert rc == 0, err
        info = json.loads(real_execute("qemu-img", "info", "--output=json",
                                       str(tmp_path / "out.qcow2"))[0])
        assert (info["format"], info["virtual-size"]) == ("qcow2", 1 << 30)
        real_execute("qemu-img", "convert", "-O", "raw", str(tmp_path / "out.qcow2"),
                     str(tmp_path / "out.raw"))
        with open(tmp_path / "out.raw", "rb") as f:
            assert f.read(600000) == image.read_bytes()
        assert sim.state()["hosts"] == {}
        assert run("volume", "--backend", "ise1", "delete", "vol1")[0] == 0
    finally:
        sim.stop()


def test_fc_copy_on_a_host_without_hbas_fails_clearly(make_run, ise, tmp_path, monkeypatch):
    """FC copies attach through this host's HBAs; with none there is nothing to do."""
    monkeypatch.setattr("hvplug.initiator.connectors.base.host_wwpns", lambda root: [])
    run = make_run(ise, driver="fc.XIOFCDriver")
    rc, _, err = run("volume", "--backend", "ise1", "copy-image", str(tmp_path / "x"), "v")
    assert rc == 2 and "this host has no FC ports" in err and "Traceback" not in err


def test_against_the_simulator_command(tmp_path, capsys):
    """The path doc/ise-simulator.md gives a user: tools/ise-simulator as a process."""
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n")
    proc = subprocess.Popen(
        [sys.executable, str(TOOLS / "ise-simulator"), "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path / "ise"), "--password-file", str(password),
         "--no-iscsi", "--delay", "0.05"],
        stdout=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline().split()
        assert ready and ready[0] == "READY", ready
        port = int(ready[1].rpartition(":")[2])
        conf = write_config(tmp_path / "hvplug.conf", port)

        def run(*argv):
            rc = cli.main(["--config-file", str(conf), "volume", "--backend", "ise1", *argv])
            out, err = capsys.readouterr()
            assert PASSWORD not in out + err
            return rc, out, err
        assert run("create", "vol1", "--size", "4")[0] == 0
        rc, out, _ = run("stats", "--json")
        assert rc == 0 and json.loads(out)["free_capacity_gb"] == 1024 - 8
        assert run("delete", "vol1")[0] == 0
        assert json.loads(run("stats", "--json")[1])["free_capacity_gb"] == 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
