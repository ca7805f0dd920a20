"""``hvplug iface ...`` in-process, with the fake iscsiadm and a fake sysfs tree."""

import json
import subprocess
import sys

import pytest

from hvplug.cli import main as cli
from hvplug.utils import executor
from tests.fakeiscsiadm import FakeIscsiadm
from tests.fakesysfs import FakeSysfs

MAC = "00:07:43:28:b2:58"
NAME = f"cxgb4i.{MAC}"


@pytest.fixture
def sysfs(tmp_path):
    return FakeSysfs(tmp_path / "sys")


@pytest.fixture
def fake(sysfs, monkeypatch):
    fake = FakeIscsiadm(sysfs_root=sysfs.root)
    monkeypatch.setattr(executor, "execute", fake)
    return fake


@pytest.fixture
def run(tmp_path, capsys, fake):
    conf = tmp_path / "hvplug.conf"
    conf.write_text("")

    def invoke(*argv):
        rc = cli.main(["--config-file", str(conf), "iface", *argv])
        out, err = capsys.readouterr()
        return rc, out, err
    return invoke


def writes(fake):
    return [c for c in fake.transcript() if " -o new" in c or " -o update" in c
            or " -o delete" in c]


# -- the Done-when cases -------------------------------------------------------------
def test_dry_run_create_without_the_hardware_prints_the_records_and_exits_1(run, fake):
    rc, out, err = run("create", "--transport", "cxgb4i", "--hwaddress", MAC, "--dry-run")
    assert rc == 1
    assert out.splitlines() == [
        f"Would create iface record {NAME}:",
        "  transport = cxgb4i",
        f"  hwaddress = {MAC}",
        "by running:",
        f"  iscsiadm -m iface -I {NAME} -o new",
        f"  iscsiadm -m iface -I {NAME} -o update -n iface.transport_name -v cxgb4i",
        f"  iscsiadm -m iface -I {NAME} -o update -n iface.hwaddress -v {MAC}"]
    assert err.startswith(f"hvplug: error: No cxgb4i hardware for {MAC} on this host")
    assert writes(fake) == [] and fake.ifaces == {} and "Traceback" not in err


def test_dry_run_create_on_this_machines_sysfs_says_the_hardware_is_missing(run, fake):
    rc, out, err = run("create", "--transport", "cxgb4i", "--hwaddress", MAC, "--dry-run",
                       "--sysfs-root", "/sys")
    assert rc == 1 and "Would create" in out and "No cxgb4i hardware" in err
    assert writes(fake) == []


@pytest.mark.parametrize("hardware", ["iscsi_host", "chelsio_nic"])
def test_dry_run_create_with_the_hardware_succeeds(hardware, run, fake, sysfs):
    if hardware == "iscsi_host":
        sysfs.add_iscsi_host(5, "cxgb4i", MAC)
        expected = "hardware: iscsi_host host5 (cxgb4i)"
    else:
        sysfs.add_nic("eth2", MAC, "0x1425")
        expected = "hardware: NIC eth2 (Chelsio 0x1425)"
    fake.host_bindings = False  # else iscsiadm's own listing writes the record first
    rc, out, err = run("create", "--transport", "cxgb4i", "--hwaddress", MAC, "--dry-run",
                       "--sysfs-root", str(sysfs.root))
    assert rc == 0, err
    assert out.splitlines()[-1] == expected and "-o new" in out
    assert writes(fake) == [] and fake.ifaces == {}


def test_dry_run_create_json(run, fake, sysfs):
    rc, out, _err = run("create", "--transport", "cxgb4i", "--hwaddress", MAC.upper(),
                       "--dry-run", "--json", "--sysfs-root", str(sysfs.root))
    assert rc == 1
    payload = json.loads(out)  # one document, even though it failed
    assert payload["action"] == "would create" and payload["dry_run"] is True
    assert payload["record"] == {"name": NAME, "transport": "cxgb4i", "hwaddress": MAC,
                                 "ipaddress": None, "net_ifacename": None,
                                 "initiatorname": None}
    assert payload["hardware"] is None and "No cxgb4i hardware" in payload["problem"]
    assert len(payload["commands"]) == 3


# -- create ----------------------------------------------------------------------
def test_create_writes_then_reuses(run, fake, sysfs):
    sysfs.add_nic("eth2", MAC, "0x1425")
    rc, out, _ = run("create", "--transport", "cxgb4i", "--hwaddress", MAC,
                     "--ipaddress", "10.0.0.5", "--sysfs-root", str(sysfs.root), "--json")
    payload = json.loads(out)
    assert rc == 0 and payload["action"] == "created" and payload["dry_run"] is False
    assert payload["commands"][-1] == f"iscsiadm -m iface -I {NAME} -o update -n " \
        "iface.ipaddress -v 10.0.0.5"
    assert fake.ifaces[NAME]["ipaddress"] == "10.0.0.5"
    rc, out, _ = run("create", "--transport", "cxgb4i", "--hwaddress", MAC,
                     "--sysfs-root", str(sysfs.root))
    assert rc == 0 and out.startswith(f"iface record {NAME} already exists with these settings")


def test_create_with_a_name_and_conflict(run, fake):
    rc, out, _ = run("create", "--transport", "tcp", "--name", "storage0",
                     "--net-ifacename", "eth1")
    assert rc == 0 and out.startswith("Created iface record storage0:")
    assert fake.ifaces["storage0"]["net_ifacename"] == "eth1"
    rc, _out, err = run("create", "--transport", "tcp", "--name", "storage0",
                        "--net-ifacename", "eth2")
    assert rc == 1 and "net_ifacename eth1 (wanted eth2)" in err
    assert fake.ifaces["storage0"]["net_ifacename"] == "eth1"


def test_create_without_the_hardware_writes_nothing(run, fake, sysfs):
    rc, out, err = run("create", "--transport", "bnx2i", "--hwaddress", MAC,
                       "--sysfs-root", str(sysfs.root))
    assert rc == 1 and out == "" and "No bnx2i hardware for" in err
    assert fake.calls == []


@pytest.mark.parametrize(("argv", "text"), [
    (["--transport", "cxgb9i", "--hwaddress", MAC], "unknown iSCSI transport 'cxgb9i'"),
    (["--transport", "cxgb4i", "--hwaddress", "00:07:43"], "is not a MAC address"),
    (["--transport", "cxgb4i"], "needs --hwaddress"),
    (["--transport", "tcp", "--name", "iser"], "built into iscsiadm"),
])
def test_create_bad_input_exits_2(argv, text, run, fake):
    rc, out, err = run("create", *argv)
    assert rc == 2 and text in err and out == "" and fake.calls == []


def test_failed_iscsiadm_is_one_line_without_traceback(run, fake, sysfs):
    fake.kernel_transports = set()
    rc, _out, err = run("create", "--transport", "tcp", "--hwaddress", MAC,
                       "--sysfs-root", str(sysfs.root))
    assert rc == 1 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "modprobe iscsi_tcp" in err and "half-written record was removed" in err
    assert fake.ifaces == {}


# -- list / show / delete -------------------------------------------------------------
def test_list(run, fake, sysfs):
    fake.new_iface(NAME, transport_name="cxgb4i", hwaddress=MAC)
    rc, out, _ = run("list", "--sysfs-root", str(sysfs.root))
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith(f"{NAME}  cxgb4i  {MAC}  -  -  UNUSABLE: ")
    assert lines[1] == "default  tcp  -  -  -  usable"
    assert lines[2].startswith("iser  iser  -  -  -  UNUSABLE: ") and "no RDMA device" in lines[2]
    sysfs.add_iscsi_host(5, "cxgb4i", MAC)
    sysfs.add_rdma_device()
    rc, out, _ = run("list", "--json", "--sysfs-root", str(sysfs.root))
    rows = json.loads(out)["ifaces"]
    assert [(r["name"], r["usable"], r["problem"]) for r in rows] == [
        (NAME, True, None), ("default", True, None), ("iser", True, None)]


def test_show(run, fake, sysfs):
    fake.new_iface("storage0", ipaddress="10.0.0.5")
    rc, out, _ = run("show", "storage0", "--sysfs-root", str(sysfs.root))
    assert rc == 0
    assert out.splitlines()[:8] == [
        "name: storage0", "transport: tcp", "hwaddress: -", "ipaddress: 10.0.0.5",
        "net_ifacename: -", "initiatorname: -", "usable now: yes", ""]
    assert "  iface.ipaddress = 10.0.0.5" in out and "  iface.mtu = 0" in out
    rc, out, _ = run("show", "storage0", "--json")
    payload = json.loads(out)
    assert payload["iface"]["usable"] is True
    assert payload["record"]["iface.iscsi_ifacename"] == "storage0"


def test_show_missing_exits_1(run, fake):
    rc, out, err = run("show", "nothing")
    assert rc == 1 and out == "" and "No open-iscsi iface record 'nothing'" in err
    rc, out, err = run("show", "nothing", "--json")
    assert rc == 1 and json.loads(out)["error"]["type"] == "IfaceNotFound"


def test_delete(run, fake):
    fake.new_iface("storage0")
    rc, out, _ = run("delete", "storage0", "--dry-run", "--json")
    assert rc == 0 and json.loads(out) == {
        "name": "storage0", "deleted": False, "dry_run": True,
        "commands": ["iscsiadm -m iface -I storage0 -o delete"]}
    assert "storage0" in fake.ifaces
    rc, out, _ = run("delete", "storage0")
    assert rc == 0 and out == "Deleted iface record storage0.\n" and fake.ifaces == {}
    rc, _out, err = run("delete", "storage0")
    assert rc == 1 and "No open-iscsi iface record 'storage0'" in err
    rc, _out, err = run("delete", "default")
    assert rc == 2 and "cannot be deleted" in err


# -- generate ----------------------------------------------------------------------
def test_generate(run, fake, sysfs):
    sysfs.add_offload("cxgb4i", MAC, host_no=5)
    sysfs.add_offload("be2iscsi", "00:00:c9:aa:bb:cc", host_no=6)
    rc, out, _ = run("generate", "--sysfs-root", str(sysfs.root))
    assert rc == 0 and out.splitlines() == [f"{NAME}  (host5, cxgb4i)",
                                            "be2iscsi.00:00:c9:aa:bb:cc  (host6, be2iscsi)"]
    assert sorted(fake.ifaces) == sorted([NAME, "be2iscsi.00:00:c9:aa:bb:cc"])


def test_generate_dry_run_json(run, fake, sysfs):
    sysfs.add_offload("cxgb4i", MAC, host_no=5)
    fake.host_bindings = False
    rc, out, _ = run("generate", "--dry-run", "--json", "--sysfs-root", str(sysfs.root))
    payload = json.loads(out)
    assert rc == 0 and payload["dry_run"] is True and fake.ifaces == {}
    assert payload["ifaces"] == [{"name": NAME, "transport": "cxgb4i", "hwaddress": MAC,
                                  "host": "host5"}]
    assert payload["commands"][0] == f"iscsiadm -m iface -I {NAME} -o new"


def test_generate_without_hardware(run, sysfs):
    rc, out, _ = run("generate", "--sysfs-root", str(sysfs.root))
    assert rc == 0 and out.startswith("No offload iSCSI host under")


# -- the CLI stays light -------------------------------------------------------------
def test_cli_import_does_not_pull_in_os_brick():
    code = ("import sys, hvplug.cli.main; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('os_brick', 'oslo_privsep', 'oslo_concurrency')))")
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
    assert "os_brick" not in out.stderr  # -X importtime's list of every import
