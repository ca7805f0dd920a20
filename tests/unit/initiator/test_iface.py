"""IfaceManager against the fake iscsiadm and a fake sysfs tree, for every transport."""

import pytest

from hvplug import exception
from hvplug.initiator.iface import Iface, IfaceManager, parse_listing, parse_record
from hvplug.initiator.iscsiadm import Iscsiadm
from tests.fakeiscsiadm import FakeIscsiadm
from tests.fakesysfs import FakeSysfs

OFFLOAD = ["cxgb3i", "cxgb4i", "qla4xxx", "bnx2i", "be2iscsi", "ocs", "qedi"]
VENDOR = {"cxgb3i": "0x1425", "cxgb4i": "0x1425", "qla4xxx": "0x1077", "qedi": "0x1077",
          "bnx2i": "0x14e4", "be2iscsi": "0x10df", "ocs": "0x10df"}
OTHER_VENDOR = {"0x1425": "0x1077", "0x1077": "0x14e4", "0x14e4": "0x10df", "0x10df": "0x1425"}
MAC = "00:07:43:28:b2:58"


@pytest.fixture
def sysfs(tmp_path):
    tree = FakeSysfs(tmp_path / "sys")
    tree.add_transport("tcp", "iser", *OFFLOAD)
    return tree


@pytest.fixture
def fake(sysfs, tmp_path):
    return FakeIscsiadm(sysfs_root=sysfs.root, dev_root=tmp_path / "dev")


@pytest.fixture
def manager(fake, sysfs):
    return IfaceManager(execute=fake, sysfs_root=str(sysfs.root))


def iface_cmd(name, *args):
    return " ".join(("iscsiadm -m iface -I", name, *args))


# -- parsing what the real iscsiadm 2.1.8 prints ----------------------------------
def test_parse_listing_of_captured_output():
    text = ("hvplug-probe-6005 tcp,<empty>,<empty>,<empty>,<empty>\n"
            "cxgb4i.00:07:43:28:b2:58 cxgb4i,00:07:43:28:b2:58,10.0.0.5,eth2,<empty>\n"
            "default tcp,<empty>,<empty>,<empty>,<empty>\n"
            "iser iser,<empty>,<empty>,<empty>,<empty>\n")
    ifaces = parse_listing(text)
    assert [i.name for i in ifaces] == ["hvplug-probe-6005", f"cxgb4i.{MAC}", "default", "iser"]
    assert ifaces[1] == Iface(f"cxgb4i.{MAC}", "cxgb4i", MAC, "10.0.0.5", "eth2", None)
    assert ifaces[0].hwaddress is None and ifaces[3].transport == "iser"


def test_parse_record_keeps_every_field(fake):
    _out, _ = fake("iscsiadm", "-m", "iface", "-I", "default", "-o", "show")
    iface = parse_record("default", _out)
    assert iface == Iface("default", "tcp")
    assert len(iface.record) == 55 and iface.record["iface.mtu"] == "0"


def test_list_and_show(manager, fake):
    fake.new_iface("mine", transport_name="tcp", ipaddress="10.1.1.1")
    assert [i.name for i in manager.list()] == ["mine", "default", "iser"]
    assert manager.show("mine").ipaddress == "10.1.1.1"
    assert manager.show("nothing-here") is None  # iscsiadm exits 6
    assert all(kw["timeout"] == manager.timeout for kw in fake.call_kwargs)


def test_show_reports_other_failures(manager, fake):
    fake.fail("iface-show", 7)
    with pytest.raises(exception.ProcessExecutionError):
        manager.show("mine")


def test_default_execute_is_resolved_at_call_time(fake_execute):
    IfaceManager().list()
    assert fake_execute.calls == [("iscsiadm", "-m", "iface")]


def test_every_command_runs_through_iscsiadm_run(manager, fake, monkeypatch):
    ran = []
    real_run = Iscsiadm.run

    def run(self, *args, **kwargs):
        ran.append(("iscsiadm", *args))
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Iscsiadm, "run", run)
    manager.create("mine", "tcp", ipaddress="10.1.1.1")
    assert manager.delete("mine") and not manager.delete("mine")
    assert ran == fake.calls and len(ran) > 4
    assert manager.writes == [c for c in fake.calls if c[-1] != "show"]


# -- ensure_iface for every transport ------------------------------------------------
@pytest.mark.parametrize("transport", OFFLOAD)
def test_ensure_creates_then_reuses_with_a_vendor_nic(transport, manager, fake, sysfs):
    sysfs.add_nic("eth2", MAC, VENDOR[transport])
    name = f"{transport}.{MAC}"
    assert manager.ensure_iface(transport, MAC.upper()) == name
    assert fake.transcript() == [
        iface_cmd(name, "-o show"), iface_cmd(name, "-o new"),
        iface_cmd(name, "-o update -n iface.transport_name -v", transport),
        iface_cmd(name, "-o update -n iface.hwaddress -v", MAC)]
    assert fake.ifaces[name]["transport_name"] == transport
    assert fake.ifaces[name]["hwaddress"] == MAC
    del fake.calls[:]
    assert manager.ensure(transport, MAC) == (name, "reused")
    assert fake.transcript() == [iface_cmd(name, "-o show")]


@pytest.mark.parametrize("transport", OFFLOAD)
def test_ensure_accepts_an_iscsi_host_without_nic(transport, manager, fake, sysfs):
    sysfs.add_iscsi_host(7, transport, MAC, ipaddress="10.0.0.7")
    assert manager.verify_hardware(transport, MAC) == f"iscsi_host host7 ({transport})"
    assert manager.ensure_iface(transport, MAC, ipaddress="10.0.0.7") == f"{transport}.{MAC}"
    assert fake.ifaces[f"{transport}.{MAC}"]["ipaddress"] == "10.0.0.7"


@pytest.mark.parametrize("transport", OFFLOAD)
def test_nic_of_another_vendor_is_refused(transport, manager, fake, sysfs):
    wrong = OTHER_VENDOR[VENDOR[transport]]
    sysfs.add_nic("eth2", MAC, wrong)
    with pytest.raises(exception.IfaceHardwareNotFound) as err:
        manager.ensure_iface(transport, MAC)
    assert transport in err.value.message and MAC in err.value.message
    assert "eth2's, whose PCI vendor is" in err.value.message and wrong in err.value.message
    assert err.value.exit_code == 1
    assert fake.calls == []  # nothing written, nothing even read


def test_missing_hardware_names_transport_and_address(manager, sysfs):
    sysfs.add_nic("eth0", "52:54:00:12:34:56", "0x1af4")
    with pytest.raises(exception.IfaceHardwareNotFound) as err:
        manager.verify_hardware("cxgb4i", MAC)
    message = err.value.message
    assert message.startswith(f"No cxgb4i hardware for {MAC} on this host")
    assert "no iscsi_host" in message and "Chelsio 0x1425 NIC" in message


def test_iscsi_host_of_another_transport_does_not_count(manager, sysfs):
    sysfs.add_iscsi_host(3, "bnx2i", MAC)
    with pytest.raises(exception.IfaceHardwareNotFound) as err:
        manager.verify_hardware("cxgb4i", MAC)
    assert "iscsi_host host3's, which runs transport bnx2i" in err.value.message


def test_iscsi_host_without_proc_name_matches_on_mac(manager, sysfs):
    sysfs.add_iscsi_host(3, None, MAC.upper())
    assert manager.verify_hardware("cxgb4i", MAC) == "iscsi_host host3"


@pytest.mark.parametrize(("given", "in_sysfs"), [(MAC.upper(), MAC), (MAC, MAC.upper()),
                                             ("00-07-43-28-B2-58", MAC)])
def test_macs_compare_case_insensitively(given, in_sysfs, manager, sysfs):
    sysfs.add_nic("eth2", in_sysfs, "0x1425")
    assert manager.verify_hardware("cxgb4i", given) == "NIC eth2 (Chelsio 0x1425)"


def test_qedi_offload_mac_differs_from_the_nic_and_is_found_via_iscsi_host(manager, fake, sysfs):
    nic_mac, offload_mac = "00:0e:1e:d6:7d:3a", "00:0e:1e:d6:7d:3b"
    sysfs.add_nic("ens1f0", nic_mac, "0x1077")
    sysfs.add_iscsi_host(9, "qedi", offload_mac, netdev="ens1f0")
    assert manager.verify_hardware("qedi", offload_mac) == "iscsi_host host9 (qedi)"
    assert manager.ensure_iface("qedi", offload_mac) == f"qedi.{offload_mac}"
    # the NIC's own MAC is still a QLogic port, so it passes too -- but only by vendor
    assert manager.verify_hardware("qedi", nic_mac) == "NIC ens1f0 (QLogic 0x1077)"


def test_existing_record_with_upper_case_mac_is_reused(manager, fake, sysfs):
    sysfs.add_nic("eth2", MAC, "0x1425")
    fake.new_iface(f"cxgb4i.{MAC}", transport_name="cxgb4i", hwaddress=MAC.upper())
    assert manager.ensure(transport="cxgb4i", hwaddress=MAC) == (f"cxgb4i.{MAC}", "reused")


def test_iser_needs_an_rdma_device(manager, fake, sysfs):
    with pytest.raises(exception.IfaceHardwareNotFound) as err:
        manager.ensure_iface("iser", None, name="rdma0")
    assert "no RDMA device" in err.value.message and fake.calls == []
    sysfs.add_rdma_device("mlx5_0")
    assert manager.ensure_iface("iser", None, name="rdma0") == "rdma0"
    assert fake.ifaces["rdma0"]["transport_name"] == "iser"


def test_iser_with_a_hwaddress_needs_that_nic(manager, sysfs):
    sysfs.add_rdma_device("mlx5_0")
    with pytest.raises(exception.IfaceHardwareNotFound):
        manager.verify_hardware("iser", MAC)
    sysfs.add_nic("ens2", MAC, "0x15b3")
    assert manager.ensure_iface("iser", MAC) == f"iser.{MAC}"


@pytest.mark.parametrize("transport", ["tcp", "default"])
def test_software_tcp_needs_no_hardware(transport, manager):
    assert "no hardware needed" in manager.verify_hardware(transport, MAC)


def test_tcp_record_bound_to_a_mac(manager, fake):
    assert manager.ensure_iface("tcp", MAC) == f"tcp.{MAC}"
    assert iface_cmd(f"tcp.{MAC}", "-o update -n iface.transport_name -v tcp") \
        not in fake.transcript()  # `-o new` already writes tcp
    assert fake.ifaces[f"tcp.{MAC}"]["hwaddress"] == MAC


# -- conflicts and updates ----------------------------------------------------------
def test_ensure_completes_the_record_iscsiadm_generated(manager, fake, sysfs):
    sysfs.add_offload("cxgb4i", MAC, host_no=5)  # iscsiadm writes cxgb4i.MAC on any -m iface
    name = f"cxgb4i.{MAC}"
    assert manager.ensure("cxgb4i", MAC, ipaddress="10.0.0.5") == (name, "updated")
    assert fake.transcript() == [iface_cmd(name, "-o show"),
                                 iface_cmd(name, "-o update -n iface.ipaddress -v 10.0.0.5")]
    assert fake.ifaces[name]["ipaddress"] == "10.0.0.5"


def test_ensure_names_the_difference(manager, fake, sysfs):
    sysfs.add_nic("eth2", MAC, "0x1425")
    fake.new_iface(f"cxgb4i.{MAC}", transport_name="cxgb4i", hwaddress=MAC, ipaddress="10.0.0.1")
    assert manager.ensure_iface("cxgb4i", MAC) == f"cxgb4i.{MAC}"  # ipaddress not asked: reused
    with pytest.raises(exception.IfaceConflict) as err:
        manager.ensure_iface("cxgb4i", MAC, ipaddress="10.0.0.2")
    assert "ipaddress 10.0.0.1 (wanted 10.0.0.2)" in err.value.message
    del fake.calls[:]
    assert manager.ensure("cxgb4i", MAC, "10.0.0.2", update=True) == (f"cxgb4i.{MAC}", "updated")
    assert [c for c in fake.transcript() if "update" in c] == [
        iface_cmd(f"cxgb4i.{MAC}", "-o update -n iface.ipaddress -v 10.0.0.2")]


def test_create_refuses_an_existing_record_instead_of_resetting_it(manager, fake):
    fake.new_iface("mine", ipaddress="10.0.0.1")
    with pytest.raises(exception.IfaceConflict) as err:
        manager.create("mine", "tcp", ipaddress="10.0.0.2")
    assert "ipaddress 10.0.0.1 (wanted 10.0.0.2)" in err.value.message
    assert not any("-o new" in c for c in fake.transcript())
    assert fake.ifaces["mine"]["ipaddress"] == "10.0.0.1"


def test_update(manager, fake, sysfs):
    fake.new_iface("mine", ipaddress="10.0.0.1", net_ifacename="eth0")
    result = manager.update("mine", ipaddress="10.0.0.9", net_ifacename="eth0")
    assert result.ipaddress == "10.0.0.9" and fake.ifaces["mine"]["ipaddress"] == "10.0.0.9"
    assert [c for c in fake.transcript() if "update" in c] == [
        iface_cmd("mine", "-o update -n iface.ipaddress -v 10.0.0.9")]
    with pytest.raises(exception.IfaceNotFound):
        manager.update("absent", ipaddress="10.0.0.9")
    with pytest.raises(exception.IfaceHardwareNotFound):  # moving it to hardware not here
        manager.update("mine", transport="cxgb4i", hwaddress=MAC)
    for name in ("default", "iser"):
        with pytest.raises(exception.InvalidInput):
            manager.update(name, ipaddress="10.0.0.9")


def test_update_to_offload_writes_transport_first(manager, fake, sysfs):
    sysfs.add_nic("eth2", MAC, "0x1425")
    fake.new_iface("mine")
    manager.update("mine", hwaddress=MAC, transport="cxgb4i")
    assert [c for c in fake.transcript() if "update" in c] == [
        iface_cmd("mine", "-o update -n iface.transport_name -v cxgb4i"),
        iface_cmd("mine", "-o update -n iface.hwaddress -v", MAC)]


def test_delete(manager, fake):
    fake.new_iface("mine")
    fake.add_target("iqn.2010-10.org.openstack:volume-1")
    fake("iscsiadm", "-m", "discovery", "-t", "st", "-p", "127.0.0.1:3260", "-I", "mine")
    assert manager.delete("mine") is True
    assert "mine" not in fake.ifaces and fake.nodes == {}  # iscsiadm drops its node records
    assert manager.delete("mine") is False
    for name in ("default", "iser"):
        with pytest.raises(exception.InvalidInput):
            manager.delete(name)


# -- failures half-way -------------------------------------------------------------
def test_failed_create_removes_the_half_record(manager, fake, sysfs):
    sysfs.add_nic("eth2", MAC, "0x1425")
    fake.fail("iface-update", 7, stderr="iscsiadm: Could not update iface: invalid parameter\n")
    with pytest.raises(exception.IfaceCommandFailed) as err:
        manager.ensure_iface("cxgb4i", MAC)
    assert "The half-written record was removed." in err.value.message
    assert "set iface.transport_name of" in err.value.message and "(exit 7)" in err.value.message
    assert fake.transcript()[-1] == iface_cmd(f"cxgb4i.{MAC}", "-o delete")
    assert f"cxgb4i.{MAC}" not in fake.ifaces


def test_failed_create_says_so_when_the_cleanup_fails_too(manager, fake, sysfs):
    sysfs.add_nic("eth2", MAC, "0x1425")
    fake.fail("iface-update", 7, stderr="iscsiadm: boom\n")
    fake.fail("iface-delete", 7, stderr="iscsiadm: cannot delete\n")
    with pytest.raises(exception.IfaceCommandFailed) as err:
        manager.ensure_iface("cxgb4i", MAC)
    assert f"remove it with 'iscsiadm -m iface -I cxgb4i.{MAC} -o delete'" in err.value.message


def test_missing_kernel_transport_is_explained(tmp_path):
    sysfs = FakeSysfs(tmp_path / "sys")  # no /sys/class/iscsi_transport, as on this machine
    fake = FakeIscsiadm(sysfs_root=sysfs.root, kernel_transports=())
    manager = IfaceManager(execute=fake, sysfs_root=str(sysfs.root))
    with pytest.raises(exception.IfaceCommandFailed) as err:
        manager.ensure_iface("tcp", MAC)
    message = err.value.message
    assert "Cound not locate transport" in message  # iscsiadm's own spelling
    assert "modprobe iscsi_tcp" in message and "half-written record was removed" in message
    assert fake.ifaces == {}


# -- generate --------------------------------------------------------------------
@pytest.fixture
def offload_host(sysfs):
    sysfs.add_offload("cxgb4i", MAC, host_no=5)
    sysfs.add_offload("bnx2i", "00:10:18:aa:bb:cc", host_no=6)
    sysfs.add_iscsi_host(7, "qla4xxx", "00:0e:1e:00:00:01")
    sysfs.add_kernel_iface(7, 0, ipaddress="10.0.0.70")
    sysfs.add_kernel_iface(7, 1, version=6, ipaddress="fe80::1")
    sysfs.add_iscsi_host(2, "tcp", None)                    # a software session's host
    sysfs.add_iscsi_host(8, "be2iscsi", None)               # no hwaddress: skipped
    return sysfs


EXPECTED = [f"cxgb4i.{MAC}", "bnx2i.00:10:18:aa:bb:cc", "qla4xxx.00:0e:1e:00:00:01.ipv4.0",
            "qla4xxx.00:0e:1e:00:00:01.ipv6.1"]


def test_generate_matches_what_iscsiadm_writes(offload_host, manager, fake):
    assert sorted(manager.generate()) == sorted(EXPECTED)
    assert sorted(fake.ifaces) == sorted(EXPECTED)  # all written by iscsiadm's listing
    assert fake.transcript() == ["iscsiadm -m iface"] and manager.writes == []


def test_generate_writes_what_iscsiadm_did_not(offload_host, sysfs, tmp_path):
    fake = FakeIscsiadm(sysfs_root=sysfs.root, host_bindings=False)
    manager = IfaceManager(execute=fake, sysfs_root=str(sysfs.root))
    assert sorted(manager.generate()) == sorted(EXPECTED)
    assert sorted(fake.ifaces) == sorted(EXPECTED)
    qla = fake.ifaces["qla4xxx.00:0e:1e:00:00:01.ipv4.0"]
    assert (qla["transport_name"], qla["ipaddress"]) == ("qla4xxx", "10.0.0.70")
    # cross-check: iscsiadm's own bindings name the same records
    again = FakeIscsiadm(sysfs_root=sysfs.root)
    again("iscsiadm", "-m", "iface")
    assert sorted(again.ifaces) == sorted(fake.ifaces)


def test_generate_without_offload_hardware(manager, fake):
    assert manager.generate() == [] and fake.ifaces == {}


# -- dry run -----------------------------------------------------------------------
def test_dry_run_reads_but_writes_nothing(sysfs, fake):
    sysfs.add_nic("eth2", MAC, "0x1425")
    fake.new_iface("old")
    manager = IfaceManager(execute=fake, sysfs_root=str(sysfs.root), dry_run=True)
    assert manager.ensure("cxgb4i", MAC) == (f"cxgb4i.{MAC}", "created")
    assert manager.delete("old") is True
    assert fake.transcript() == [iface_cmd(f"cxgb4i.{MAC}", "-o show"),
                                 iface_cmd("old", "-o show")]
    assert [" ".join(c) for c in manager.writes] == [
        iface_cmd(f"cxgb4i.{MAC}", "-o new"),
        iface_cmd(f"cxgb4i.{MAC}", "-o update -n iface.transport_name -v cxgb4i"),
        iface_cmd(f"cxgb4i.{MAC}", "-o update -n iface.hwaddress -v", MAC),
        iface_cmd("old", "-o delete")]
    assert sorted(fake.ifaces) == ["old"]


def test_dry_run_generate(offload_host, sysfs):
    fake = FakeIscsiadm(sysfs_root=sysfs.root, host_bindings=False)
    manager = IfaceManager(execute=fake, sysfs_root=str(sysfs.root), dry_run=True)
    assert sorted(manager.generate()) == sorted(EXPECTED)
    assert fake.ifaces == {} and fake.transcript() == ["iscsiadm -m iface"]
    assert sum(c[-1] == "new" for c in manager.writes) == len(EXPECTED)


# -- unusable_reason (the volume driver's fallback) ----------------------------------
def test_unusable_reason(manager, fake, sysfs):
    assert manager.unusable_reason("default") is None
    assert manager.unusable_reason("") is None
    assert "no iface record 'cxgb4i.x'" in manager.unusable_reason("cxgb4i.x")
    fake.new_iface(f"cxgb4i.{MAC}", transport_name="cxgb4i", hwaddress=MAC)
    reason = manager.unusable_reason(f"cxgb4i.{MAC}")
    assert "No cxgb4i hardware for 00:07:43:28:b2:58" in reason
    sysfs.add_iscsi_host(5, "cxgb4i", MAC)
    assert manager.unusable_reason(f"cxgb4i.{MAC}") is None
    fake.new_iface("nohw", transport_name="bnx2i")
    assert "give the hwaddress" in manager.unusable_reason("nohw")
    fake.new_iface("odd", transport_name="qla3xxx")
    assert "transport 'qla3xxx'" in manager.unusable_reason("odd")
    fake.new_iface("soft", hwaddress=MAC)
    assert manager.unusable_reason("soft") is None
    assert "no RDMA device" in manager.unusable_reason("iser")
    sysfs.add_rdma_device()
    assert manager.unusable_reason("iser") is None
    assert "iface name 'bad name'" in manager.unusable_reason("bad name")


# -- input checks ------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "text"), [
    ({"transport": "cxgb5i", "hwaddress": MAC}, "unknown iSCSI transport 'cxgb5i'"),
    ({"transport": "cxgb4i", "hwaddress": "00:07:43:28:b2"}, "is not a MAC address"),
    ({"transport": "cxgb4i", "hwaddress": "zz:07:43:28:b2:58"}, "is not a MAC address"),
    ({"transport": "cxgb4i", "hwaddress": None}, "needs --hwaddress"),
    ({"transport": "tcp", "hwaddress": None}, "or a name"),
    ({"transport": "default", "hwaddress": MAC}, "built-in software iface"),
    ({"transport": "tcp", "hwaddress": MAC, "ipaddress": "10.0.0"}, "not an IPv4 or IPv6"),
    ({"transport": "tcp", "hwaddress": MAC, "net_ifacename": "eth 0"}, "network device name"),
    ({"transport": "tcp", "hwaddress": MAC, "name": "../../etc/passwd"}, "iface name"),
    ({"transport": "tcp", "hwaddress": MAC, "name": "default"}, "built into iscsiadm"),
])
def test_bad_input_is_exit_2_and_runs_nothing(kwargs, text, manager, fake):
    with pytest.raises(exception.InvalidInput) as err:
        manager.ensure_iface(**kwargs)
    assert text in err.value.message and err.value.exit_code == 2
    assert fake.calls == []
