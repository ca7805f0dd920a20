"""The fake iscsiadm itself: the session side the volume driver's tests build on.

Its iface answers are checked against the real iscsiadm in
tests/functional/test_iface_real.py; these pin the rest of its behaviour.
"""

import os

import pytest

from hvplug import exception
from tests.fakeiscsiadm import FakeIscsiadm
from tests.fakesysfs import FakeSysfs

IQN = "iqn.2010-10.org.openstack:volume-1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
OFFLOAD = "cxgb4i.00:07:43:28:b2:58"


@pytest.fixture
def fake(tmp_path):
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.add_offload("cxgb4i", "00:07:43:28:b2:58", host_no=5)
    fake = FakeIscsiadm(sysfs_root=sysfs.root, dev_root=tmp_path / "dev")
    fake("iscsiadm", "-m", "iface")  # iscsiadm writes the offload host's record
    return fake


def run(fake, *args, **kwargs):
    """(status, stdout, stderr) the way a caller accepting every status sees it."""
    try:
        out, err = fake("iscsiadm", *args, timeout=5.0, **kwargs)
        return 0, out, err
    except exception.ProcessExecutionError as exc:
        return exc.kwargs["status"], exc.kwargs.get("stdout"), exc.stderr


def node(*args, iface=OFFLOAD, portal=P1):
    return ("-m", "node", "-T", IQN, "-p", portal, "-I", iface, *args)


def chap(fake, user="user", password="pw", suffix="", iface=OFFLOAD):
    for key, value in (("authmethod", "CHAP"), (f"username{suffix}", user),
                       (f"password{suffix}", password)):
        run(fake, *node("-o", "update", "-n", f"node.session.auth.{key}", "-v", value,
                        iface=iface), secrets=(password,))


def test_discovery_through_an_iface_writes_bound_node_records(fake):
    fake.add_target(IQN, portals=[P1, P2])
    status, out, _ = run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", OFFLOAD)
    assert status == 0 and out == f"{P1},1 {IQN}\n{P2},1 {IQN}\n"
    assert sorted(fake.nodes) == [(IQN, P1, OFFLOAD), (IQN, P2, OFFLOAD)]
    assert run(fake, "-m", "node") == (0, f"{P1},1 {IQN}\n{P2},1 {IQN}\n", "")


def test_discovery_without_iface_binds_to_tcp_records_not_the_offload_one(fake):
    fake.add_target(IQN, portals=[P1])
    run(fake, "-m", "discovery", "-t", "st", "-p", P1)
    assert list(fake.nodes) == [(IQN, P1, "default")]
    fake.new_iface("tcp.52:54:00:00:00:01", hwaddress="52:54:00:00:00:01")
    run(fake, "-m", "discovery", "-t", "st", "-p", P1)
    assert (IQN, P1, "tcp.52:54:00:00:00:01") in fake.nodes  # as iscsiadm does: not default


def test_discovery_failures(fake):
    status, _, err = run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", OFFLOAD)
    assert status == 4 and "encountered connection failure" in err
    status, _, err = run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", "nosuch")
    assert status == 21 and "Could not read iface info for nosuch" in err
    fake.add_target(IQN, portals=[P1], discovery_chap=("d", "dpw"))
    assert run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", OFFLOAD)[0] == 24
    for key, value in (("authmethod", "CHAP"), ("username", "d"), ("password", "dpw")):
        run(fake, "-m", "discoverydb", "-t", "st", "-p", P1, "-I", OFFLOAD, "-o", "update",
            "-n", f"discovery.sendtargets.auth.{key}", "-v", value, secrets=("dpw",))
    status, out, _ = run(fake, "-m", "discoverydb", "-t", "st", "-p", P1, "-I", OFFLOAD,
                         "--discover")
    assert status == 0 and out == f"{P1},1 {IQN}\n"


def test_login_chap_session_device_logout(fake, tmp_path):
    fake.add_target(IQN, portals=[P1], luns=(1, 2), chap=("user", "pw"))
    run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", OFFLOAD)
    status, out, err = run(fake, *node("--login"))
    where = f"[iface: {OFFLOAD}, target: {IQN}, portal: 10.0.0.1,3260]"
    assert status == 24 and out == f"Logging in to {where}\n"
    assert err == (f"iscsiadm: Could not login to {where}.\niscsiadm: initiator reported error "
                   "(24 - iSCSI login failed due to authorization failure)\n"
                   "iscsiadm: Could not log into all portals")
    chap(fake)
    assert run(fake, *node("--login")) == (
        0, f"Logging in to {where}\nLogin to {where} successful.\n", "")
    assert run(fake, *node("--login"))[0] == 0 and len(fake.sessions) == 1  # already in
    assert run(fake, "-m", "session") == (0, f"cxgb4i: [1] {P1},1 {IQN} (non-flash)\n", "")
    link = fake.device_path(P1, IQN, 2, "cxgb4i")
    assert link.name == f"pci-0000:05:00.4-ip-{P1}-iscsi-{IQN}-lun-2"
    assert os.path.realpath(link) == str(tmp_path / "dev" / "sdb")
    assert "Attached scsi disk sdb" in run(fake, "-m", "session", "-P", "3")[1]
    assert run(fake, *node("-o", "delete"))[0] == 15  # in use
    status, out, _ = run(fake, *node("--logout"))
    assert status == 0 and out.endswith(
        f"Logout of [sid: 1, target: {IQN}, portal: 10.0.0.1,3260] successful.\n")
    assert not link.exists() and not (tmp_path / "dev" / "sdb").exists()
    assert run(fake, "-m", "session") == (21, "", "iscsiadm: No active sessions.")
    assert run(fake, *node("--logout")) == (21, "", "iscsiadm: No matching sessions found")


def test_software_tcp_device_has_no_pci_prefix(fake):
    fake.add_target(IQN, portals=[P1])
    run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", "default")
    run(fake, *node("--login", iface="default"))
    assert fake.device_path(P1, IQN, 1).name == f"ip-{P1}-iscsi-{IQN}-lun-1"
    assert fake.device_path(P1, IQN, 1).is_symlink()


def test_mutual_chap_and_missing_kernel_transport(fake):
    fake.add_target(IQN, portals=[P1], chap=("user", "pw"), chap_in=("tgt", "tpw"))
    run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", OFFLOAD)
    chap(fake)
    assert run(fake, *node("--login"))[0] == 19
    chap(fake, "tgt", "tpw", suffix="_in")
    fake.kernel_transports = {"tcp"}
    status, _, err = run(fake, *node("--login"))
    assert status == 12 and "iSCSI driver not found" in err
    fake.kernel_transports.add("cxgb4i")
    assert run(fake, *node("--login"))[0] == 0


def test_devices_appear_after_rescans(fake):
    fake.add_target(IQN, portals=[P1], devices_after_rescans=2)
    run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", OFFLOAD)
    run(fake, *node("--login"))
    link = fake.device_path(P1, IQN, 1, "cxgb4i")
    assert not link.exists()
    run(fake, *node("-R"))
    assert not link.exists()
    status, out, _ = run(fake, "-m", "session", "-r", "1", "--rescan")
    assert status == 0 and out.startswith("Rescanning session [sid: 1,") and link.exists()


def test_node_records_new_update_show(fake):
    status, out, _ = run(fake, *node("-o", "new", iface="default"))
    assert status == 0 and out == (f"New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] "
                                   f"10.0.0.1,3260,-1 {IQN}] added\n")
    chap(fake, iface="default")
    shown = run(fake, *node("-o", "show", iface="default"))[1]
    assert "node.session.auth.password = ********" in shown
    assert "node.session.auth.password = pw" in run(fake, *node("-o", "show", "-S",
                                                                iface="default"))[1]
    assert run(fake, *node("-o", "update", "-n", "node.startup", "-v", "automatic",
                           portal="10.9.9.9"))[0] == 21
    assert run(fake, *node("--login", iface="nosuch")) == (
        3, "", "iscsiadm: Could not read iface info for nosuch.")


def test_faults(fake):
    fake.add_target(IQN, portals=[P1])
    run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", OFFLOAD)
    fake.hang("login", iqn=IQN)
    assert run(fake, *node("--login")) == ("-", None, "no answer within 5.0 s")
    assert fake.timeouts == [5.0] and fake.sessions == []
    fake.fail("login", 8, times=None)
    assert run(fake, *node("--login"))[0] == 8 and run(fake, *node("--login"))[0] == 8
    fake.fail("discovery", 4, stderr="iscsiadm: no route\n")
    assert run(fake, "-m", "discovery", "-t", "st", "-p", P1) == (4, "", "iscsiadm: no route")


def test_the_executor_contract(fake):
    with pytest.raises(AssertionError, match="unbounded wait"):
        fake("iscsiadm", "-m", "session", timeout=None)
    with pytest.raises(AssertionError, match="not named in secrets"):
        fake("iscsiadm", *node("-o", "update", "-n", "node.session.auth.password", "-v", "pw"))
    assert fake("iscsiadm", "-m", "session", check_exit_code=(0, 21)) == (
        "", "iscsiadm: No active sessions.\n")
    fake.new_iface("x")
    fake("iscsiadm", "-m", "iface", "-I", "x", "-o", "update", "-n", "iface.ipaddress",
         "-v", "10.0.0.9")
    assert fake.transcript()[-1].endswith("-v 10.0.0.9")
    fake.add_target(IQN, portals=[P1])
    run(fake, *node("-o", "new", iface="default"))
    run(fake, *node("-o", "update", "-n", "node.session.auth.password", "-v", "s3cret",
                    iface="default"), secrets=("s3cret",))
    assert "s3cret" not in " ".join(fake.transcript()) and "-v ***" in fake.transcript()[-1]
    with pytest.raises(NotImplementedError):
        fake("iscsiadm", "-m", "fw")


def test_sessions_and_disks_show_in_sysfs(fake):
    target = fake.add_target(IQN, portals=[P1], size=64 << 20)
    run(fake, "-m", "discovery", "-t", "st", "-p", P1, "-I", OFFLOAD)
    run(fake, *node("--login"))
    session = fake.sysfs / "class" / "iscsi_session" / "session1"
    assert (session / "ifacename").read_text() == f"{OFFLOAD}\n"
    size = fake.sysfs / "block" / "sda" / "size"
    assert size.read_text() == f"{(64 << 20) // 512}\n"
    target.size = 128 << 20
    assert size.read_text() == f"{(64 << 20) // 512}\n"  # the kernel sees it on a rescan
    run(fake, *node("-R"))
    assert size.read_text() == f"{(128 << 20) // 512}\n"
    run(fake, *node("--logout"))
    assert not session.exists() and not (fake.sysfs / "block" / "sda").exists()
