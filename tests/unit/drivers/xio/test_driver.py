"""XIOISCSIDriver and XIOFCDriver against the simulated ISE over real HTTP,
and the backends that load them."""

import os
import socket
import subprocess

import pytest

from hvplug import exception
from hvplug.conf import backends
from hvplug.drivers.xio.fc import XIOFCDriver
from hvplug.drivers.xio.iscsi import XIOISCSIDriver
from hvplug.image import iscsi_copy
from hvplug.utils.executor import execute as real_execute  # before the fake replaces it
from tests import stack
from tests.unit.drivers.xio import (
    HOST_IQN,
    PASSWORD,
    WWPNS,
    SimulatedISE,
    load_config,
    write_config,
)

ISCSI = {"initiator": HOST_IQN, "host": "compute1"}
FC = {"wwpns": WWPNS, "host": "compute1"}
FC_NORMAL = ["21000024ff3a1b2c", "21000024ff3a1b2d"]


@pytest.fixture
def ise(tmp_path):
    sim = SimulatedISE(tmp_path / "ise").start()
    yield sim
    sim.stop()


@pytest.fixture
def make_driver(ise, tmp_path):
    def make(**options):
        load_config(write_config(tmp_path / "hvplug.conf", ise.port, **options))
        return backends.load_driver("ise1")
    return make


@pytest.fixture
def driver(make_driver) -> XIOISCSIDriver:
    return make_driver()


@pytest.fixture
def fc_driver(make_driver) -> XIOFCDriver:
    return make_driver(driver="fc.XIOFCDriver")


# -- volumes, snapshots, clones -----------------------------------------------
def test_create_volume_waits_until_operational(driver, ise):
    made = driver.create_volume("vol1", 3)
    assert made["status"] == "OPERATIONAL" and made["size_gb"] == 3
    vol = next(iter(ise.state()["volumes"].values()))
    assert (vol["name"], vol["size"], vol["redundancy"], vol["pool"]) == ("vol1", 3, "1", "1")


def test_create_volume_uses_raid_level_and_pool(make_driver, ise):
    driver = make_driver(ise_raid_level="5", ise_storage_pool="Pool 2")  # deprecated name
    driver.create_volume("vol1", 1)
    vol = next(iter(ise.state()["volumes"].values()))
    assert (vol["redundancy"], vol["pool"]) == ("5", "2")


def test_create_existing_volume_is_refused(driver):
    driver.create_volume("vol1", 1)
    with pytest.raises(exception.ISEVolumeExists):
        driver.create_volume("vol1", 1)


def test_slow_create_is_not_duplicated(make_driver, ise):
    driver = make_driver(ise_request_timeout=0.3)
    driver.client.array  # noqa: B018
    ise.fault(slow=1.0)
    assert driver.create_volume("vol1", 1)["status"] == "OPERATIONAL"
    assert ise.volume_names() == ["vol1"]


def test_create_through_http_500_is_not_duplicated(driver, ise):
    driver.client.array  # noqa: B018
    ise.fault(http500=2)
    driver.create_volume("vol1", 1)
    assert ise.volume_names() == ["vol1"]


def test_create_fails_clearly_when_retries_run_out(driver, ise):
    driver.client.array  # noqa: B018
    ise.fault(http500=1000)
    with pytest.raises(exception.ISEConnectionFailed) as err:
        driver.create_volume("vol1", 1)
    assert PASSWORD not in err.value.message
    ise.fault(http500=0)
    assert ise.volume_names() == []


def test_create_is_bounded_by_completion_retries(tmp_path):
    sim = SimulatedISE(tmp_path / "slow-ise", delay=30).start()
    try:
        load_config(write_config(tmp_path / "c.conf", sim.port, ise_completion_retries=3))
        driver = backends.load_driver("ise1")
        with pytest.raises(exception.ISETimeout, match="3 polls.*vol1 is CREATING"):
            driver.create_volume("vol1", 1)
    finally:
        sim.stop()


def test_delete_volume_waits_until_gone(driver, ise):
    driver.create_volume("vol1", 1)
    driver.delete_volume("vol1")
    assert ise.state()["volumes"] == {}
    driver.delete_volume("vol1")  # already gone is fine


def test_delete_whose_answer_came_too_late(make_driver, ise):
    driver = make_driver(ise_request_timeout=0.3)
    driver.create_volume("vol1", 1)
    ise.fault(slow=1.0)  # the volume goes, the 204 is lost; the retry's 404 is fine
    driver.delete_volume("vol1")
    assert ise.state()["volumes"] == {}


def test_snapshot_clone_and_volume_from_snapshot(driver, ise):
    driver.create_volume("vol1", 2)
    snap = driver.create_snapshot("vol1", "snap1")
    assert snap["status"] == "OPERATIONAL" and snap["size_gb"] == 2
    assert driver.create_volume_from_snapshot("snap1", "vol2")["size_gb"] == 2
    assert driver.create_volume_from_snapshot("snap1", "vol3", 4)["size_gb"] == 4
    assert driver.create_cloned_volume("vol1", "vol4")["status"] == "OPERATIONAL"
    types = {v["name"]: v["type"] for v in ise.state()["volumes"].values()}
    assert types["snap1"] == "snapshot" and types["vol2"] == types["vol4"] == "clone"
    for name in ("vol4", "vol3", "vol2"):
        driver.delete_volume(name)
    driver.delete_snapshot("snap1")
    driver.delete_volume("vol1")
    assert ise.state()["volumes"] == {}


def test_snapshot_retries_not_in_a_valid_state(driver, ise):
    driver.create_volume("vol1", 1)
    ise.fault(invalid_state=4)
    assert driver.create_snapshot("vol1", "snap1")["status"] == "OPERATIONAL"
    assert ise.fault()["invalid_state"] == 0


def test_snapshot_of_a_missing_volume(driver):
    with pytest.raises(exception.ISEVolumeNotFound):
        driver.create_snapshot("nope", "snap1")


def test_extend(driver, ise):
    driver.create_volume("vol1", 1)
    assert driver.extend_volume("vol1", 3)["size_gb"] == 3
    assert next(iter(ise.state()["volumes"].values()))["size"] == 3
    with pytest.raises(exception.InvalidInput, match="only grow"):
        driver.extend_volume("vol1", 2)


# -- stats ---------------------------------------------------------------------
def test_stats_reflect_volumes_and_are_fresh_each_time(driver):
    before = driver.get_volume_stats()
    assert before["vendor_name"] == "X-IO"
    assert before["storage_protocol"] == "iSCSI"
    assert before["volume_backend_name"] == "ise1"
    assert [p["pool_name"] for p in before["pools"]] == ["Pool 1", "Pool 2"]
    assert before["total_capacity_gb"] == 200 and before["free_capacity_gb"] == 200
    before["pools"][0]["free_capacity_gb"] = -1
    driver.create_volume("vol1", 10)  # RAID 1: 20 GB of pool 1
    after = driver.get_volume_stats()
    assert after is not before and after["pools"] is not before["pools"]
    assert [p["free_capacity_gb"] for p in after["pools"]] == [80, 100]
    assert after["free_capacity_gb"] == 180


def test_stats_name_the_configured_backend_name(make_driver):
    driver = make_driver(volume_backend_name="gold", driver="fc.XIOFCDriver")
    stats = driver.get_volume_stats()
    assert (stats["volume_backend_name"], stats["storage_protocol"]) == \
        ("gold", "fibre_channel")


# -- iSCSI connections -----------------------------------------------------------
def _hosts(ise) -> list[dict]:
    return list(ise.state()["hosts"].values())


def test_iscsi_connection_info(driver, ise):
    driver.create_volume("vol1", 1)
    info = driver.initialize_connection("vol1", ISCSI)
    data = info["data"]
    assert info["driver_volume_type"] == "iscsi"
    assert data["target_portal"] == "127.0.0.1:3260"
    assert data["target_iqn"] == ise.state()["iqn"]
    assert data["target_lun"] == 1 and isinstance(data["target_lun"], int)
    chap = ise.array.chap()
    assert (data["auth_method"], data["auth_username"], data["auth_password"]) == \
        ("CHAP", chap["username"], chap["password"])
    [host] = _hosts(ise)
    assert host["endpoints"] == [HOST_IQN] and host["os"] == "openstack"


def test_iscsi_without_chap_has_no_auth_keys(driver, ise):
    ise.admin("chap", enabled="0")
    driver.create_volume("vol1", 1)
    data = driver.initialize_connection("vol1", ISCSI)["data"]
    assert not {k for k in data if k.startswith("auth_")}


def test_iscsi_ip_address_must_match_an_ioport(make_driver):
    driver = make_driver(iscsi_ip_address="192.0.2.99")
    driver.create_volume("vol1", 1)
    with pytest.raises(exception.ISEConfigError, match="192.0.2.99.*127.0.0.1"):
        driver.initialize_connection("vol1", ISCSI)


def test_host_object_is_reused_and_removed_with_its_last_allocation(driver, ise):
    driver.create_volume("vol1", 1)
    driver.create_volume("vol2", 1)
    lun1 = driver.initialize_connection("vol1", ISCSI)["data"]["target_lun"]
    lun2 = driver.initialize_connection("vol2", ISCSI)["data"]["target_lun"]
    assert lun1 != lun2 and len(_hosts(ise)) == 1
    assert driver.initialize_connection("vol1", ISCSI)["data"]["target_lun"] == lun1
    driver.terminate_connection("vol1", ISCSI)
    assert len(_hosts(ise)) == 1 and len(ise.state()["allocations"]) == 1
    driver.terminate_connection("vol2", ISCSI)
    assert _hosts(ise) == [] and ise.state()["allocations"] == {}
    driver.terminate_connection("vol2", ISCSI)  # nothing left: no error


def test_existing_host_gets_os_openstack(driver, ise):
    driver.client.post(driver.client.array_path("hosts"),
                       [("name", "legacy"), ("endpoint", HOST_IQN), ("os", "linux")])
    driver.create_volume("vol1", 1)
    driver.initialize_connection("vol1", ISCSI)
    [host] = _hosts(ise)
    assert (host["name"], host["os"]) == ("legacy", "openstack")


def test_iscsi_needs_an_initiator(driver):
    with pytest.raises(exception.InvalidInput, match="IQN"):
        driver.initialize_connection("vol1", {"wwpns": FC_NORMAL})


def test_presenting_a_missing_volume(driver, ise):
    with pytest.raises(exception.ISEVolumeNotFound):
        driver.initialize_connection("nope", ISCSI)


# -- FC connections ----------------------------------------------------------------
def test_fc_connection_info_and_host_removal(fc_driver, ise):
    fc_driver.create_volume("vol1", 1)
    info = fc_driver.initialize_connection("vol1", FC)
    data = info["data"]
    wwns = ise.array.wwns
    assert info["driver_volume_type"] == "fibre_channel"
    assert data["target_wwn"] == wwns and data["target_discovered"] is True
    assert data["target_lun"] == 1 and isinstance(data["target_lun"], int)
    assert data["initiator_target_map"] == dict.fromkeys(FC_NORMAL, wwns)
    [host] = _hosts(ise)
    assert host["endpoints"] == FC_NORMAL and host["os"] == "openstack"
    fc_driver.terminate_connection("vol1", {"wwpns": ["21:00:00:24:FF:3A:1B:2C"]})
    assert _hosts(ise) == [] and ise.state()["allocations"] == {}


def test_fc_needs_wwpns(fc_driver):
    with pytest.raises(exception.InvalidInput, match="WWPN"):
        fc_driver.initialize_connection("vol1", ISCSI)
    with pytest.raises(exception.InvalidInput, match="16 hex"):
        fc_driver.initialize_connection("vol1", {"wwpns": ["abc"]})


# -- presenting to an iSCSI host exports through tgtd --------------------------------
@pytest.mark.stack
def test_iscsi_presentation_is_served_by_tgtd(tmp_path):
    stack.require_tgtd()
    from ise_sim.iscsi import TgtdExporter

    from hvplug.target.tgtd_ipc import TgtdIPC
    sim = SimulatedISE(tmp_path / "ise", exporter_factory=TgtdExporter).start()
    try:
        load_config(write_config(tmp_path / "c.conf", sim.port))
        driver = backends.load_driver("ise1")
        driver.create_volume("vol1", 1)
        data = driver.initialize_connection("vol1", ISCSI)["data"]
        targets = {t.iqn: t for t in TgtdIPC("/var/run/tgtd/socket.0").list_targets().values()}
        target = targets[data["target_iqn"]]
        assert data["target_lun"] in target.luns and HOST_IQN in target.acls
        with socket.create_connection(("127.0.0.1", 3260), timeout=2):
            pass  # the portal connection_info names answers
        driver.terminate_connection("vol1", ISCSI)
        targets = {t.iqn for t in TgtdIPC("/var/run/tgtd/socket.0").list_targets().values()}
        assert data["target_iqn"] not in targets
        driver.delete_volume("vol1")
    finally:
        sim.stop()


# -- backends ------------------------------------------------------------------------
def test_unknown_backend_names_the_known_ones(driver):
    with pytest.raises(exception.BackendNotFound, match=r"'gold'.*known: ise1") as err:
        backends.backend_conf("gold")
    assert err.value.exit_code == exception.EXIT_BAD_INPUT


def test_no_backends_enabled():
    with pytest.raises(exception.BackendNotFound, match="known: none"):
        backends.backend_conf("ise1")


@pytest.mark.parametrize(("path", "reason"), [
    ("nodots", "dotted.path.Class"),
    ("hvplug.drivers.nosuch.Driver", "cannot import"),
    ("hvplug.drivers.xio.iscsi.Nope", "no volume driver class Nope"),
])
def test_bad_volume_driver(tmp_path, path, reason):
    load_config(write_config(tmp_path / "c.conf", 1, driver=None, volume_driver=path))
    with pytest.raises(exception.InvalidBackendDriver, match=reason):
        backends.load_driver("ise1")


def test_missing_volume_driver(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("[DEFAULT]\nenabled_backends = ise1\n[ise1]\nsan_ip = 127.0.0.1\n")
    load_config(path)
    with pytest.raises(exception.InvalidBackendDriver, match="sets no volume_driver"):
        backends.load_driver("ise1")


def test_bad_option_value_fails_when_the_backend_loads(tmp_path):
    load_config(write_config(tmp_path / "c.conf", 1, ise_raid_level="7"))
    with pytest.raises(exception.ConfigFileError, match=r"\[ise1\] ise_raid_level"):
        backends.backend_conf("ise1")


def test_backend_defaults_fill_what_a_section_leaves_out(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text(
        "[DEFAULT]\nenabled_backends = a, b\n"
        "[backend_defaults]\nsan_login = ops\nise_connection_retries = 9\n"
        "volume_driver = hvplug.drivers.xio.fc.XIOFCDriver\n"
        "[a]\nvolume_driver = hvplug.drivers.xio.iscsi.XIOISCSIDriver\nsan_ip = 192.0.2.1\n"
        "[b]\nsan_ip = 192.0.2.2\nise_connection_retries = 2\n")
    load_config(path)
    a, b = backends.backend_conf("a"), backends.backend_conf("b")
    assert (a.san_ip, a.san_login, a.ise_connection_retries) == ("192.0.2.1", "ops", 9)
    assert (b.san_ip, b.san_login, b.ise_connection_retries) == ("192.0.2.2", "ops", 2)
    assert (a.backend_name, a.ise_completion_retries, a.san_api_port) == ("a", 30, None)
    assert isinstance(backends.load_driver("b"), XIOFCDriver)
    assert isinstance(backends.load_driver("a"), XIOISCSIDriver)


def test_the_password_option_is_secret():
    from hvplug.conf.xio import xio_opts
    assert {o.name for o in xio_opts if o.secret} == {"san_password"}


def test_ssl_defaults_to_port_443(tmp_path):
    load_config(write_config(tmp_path / "c.conf", None, driver_use_ssl="true"))
    client = backends.load_driver("ise1").client
    assert (client.scheme, client.port, client.session.verify) == ("https", 443, True)
    load_config(write_config(tmp_path / "c.conf", 8443, driver_use_ssl="true",
                             driver_ssl_cert_path="/etc/ise-ca.pem"))
    client = backends.load_driver("ise1").client
    assert (client.port, client.session.verify) == (8443, "/etc/ise-ca.pem")
    load_config(write_config(tmp_path / "c.conf", None))
    client = backends.load_driver("ise1").client
    assert (client.scheme, client.port) == ("http", 80)


# -- images ------------------------------------------------------------------------
def _image(path, size: int, fmt: str = "raw") -> bytes:
    payload = os.urandom(size)
    raw = path.with_suffix(".raw")
    raw.write_bytes(payload)
    if fmt != "raw":
        subprocess.run(["qemu-img", "convert", "-O", fmt, str(raw), str(path)], check=True)
    return payload


def _head(path, size: int) -> bytes:
    """The first ``size`` bytes of ``path`` (the volumes are 1 GiB sparse files:
    reading them whole costs seconds of system time)."""
    with open(path, "rb") as f:
        return f.read(size)


@pytest.mark.stack
@pytest.mark.parametrize(("fmt_in", "fmt_out"), [("raw", "qcow2"), ("qcow2", "raw")])
def test_copy_image_in_and_out_over_iscsi(tmp_path, fmt_in, fmt_out):
    stack.require_tgtd()
    from ise_sim.iscsi import TgtdExporter
    sim = SimulatedISE(tmp_path / "ise", exporter_factory=TgtdExporter).start()
    try:
        load_config(write_config(tmp_path / "c.conf", sim.port))
        driver = XIOISCSIDriver(backends.backend_conf("ise1"), execute=real_execute)
        driver.create_volume("vol1", 1)
        payload = _image(tmp_path / f"in.{fmt_in}", 3 << 20, fmt_in)
        driver.copy_image_to_volume(str(tmp_path / f"in.{fmt_in}"), "vol1", ISCSI)
        assert sim.state()["hosts"] == {}  # presented for the copy only
        out = tmp_path / f"out.{fmt_out}"
        driver.copy_volume_to_image("vol1", str(out), fmt_out, ISCSI)
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(out), str(tmp_path / "o")],
                       check=True)
        assert (tmp_path / "o").stat().st_size == 1 << 30
        assert _head(tmp_path / "o", len(payload)) == payload
        driver.delete_volume("vol1")
    finally:
        sim.stop()


def test_copy_keeps_an_existing_presentation(driver, ise, tmp_path, fake_execute):
    driver.create_volume("vol1", 1)
    driver.initialize_connection("vol1", ISCSI)
    driver.copy_volume_to_image("vol1", str(tmp_path / "o.raw"), "raw", ISCSI)
    assert len(ise.state()["allocations"]) == 1
    [cmd] = [c for c in fake_execute.calls if c[:2] == ("qemu-img", "convert")]
    password = ise.array.chap()["password"]
    assert not any(password in arg for arg in cmd)  # only in the secret file
    [(secret, mode)] = fake_execute.files.values()
    assert (secret, mode) == (password, 0o600)
    assert "user=" + ise.array.chap()["username"] in cmd[cmd.index("--image-opts") + 1]


def test_copy_image_larger_than_the_volume(tmp_path, driver):
    driver.execute = real_execute
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(tmp_path / "big"), "3G"],
                   check=True, capture_output=True)
    driver.create_volume("vol1", 2)
    with pytest.raises(exception.InvalidInput, match="needs 3 GB.*is 2 GB"):
        driver.copy_image_to_volume(str(tmp_path / "big"), "vol1", ISCSI)


def test_fc_copy_goes_through_a_host_attach(fc_driver, ise, tmp_path, monkeypatch):
    """FC has no qemu initiator: the host's HBAs attach the LUN (the FC
    connector, no hypervisor) and qemu-img copies to and from that block
    device (a fake FC host here, whose scan finds the LUN's disks)."""
    from hvplug.initiator.connectors import fibre_channel
    from tests.fakefcsysfs import FakeFcConnector, FakeFcHost
    fc_driver.execute = real_execute
    fc = FakeFcHost(tmp_path / "fc")
    fc.add_hba(5, FC_NORMAL[0])
    wwns = fc_driver.target_wwns()
    for n, wwn in enumerate(wwns):
        fc.add_target_port(5, 0, n, wwn)
    scanned: list = []  # what each scan found: the LUN's by-path links

    class ScanningConnector(FakeFcConnector):
        fill = None  # what the array returns for the LUN, on the next scan

        def connect_volume(self, props):
            links = [link for wwn in wwns for link in fc.zone(wwn, 1)]
            for link in links if self.fill else ():
                with open(os.path.realpath(link), "r+b") as f:
                    f.write(self.fill)
            scanned.append({link: os.path.realpath(link) for link in links})
            return super().connect_volume(props)

    monkeypatch.setattr(fc_driver, "host_connector", lambda: fibre_channel.FibreChannelConnector(
        fc_driver.execute, sysfs_root=str(fc.sys), dev_root=str(fc.dev),
        lock_dir=str(tmp_path / "locks"), brick_factory=lambda *args: ScanningConnector(fc)))

    fc_driver.create_volume("vol1", 1)
    image = tmp_path / "in.raw"
    image.write_bytes(b"\x6b" * 65536)
    fc_driver.copy_image_to_volume(str(image), "vol1", FC)
    (links,) = scanned
    assert not any(link.exists() for link in links)  # detached again
    written = [d for d in set(links.values()) if _head(d, 65536) == b"\x6b" * 65536]
    assert len(written) == 1
    assert ise.state()["allocations"] == {}  # presented for the copy only

    ScanningConnector.fill = b"\x6b" * 65536
    out = tmp_path / "out.qcow2"
    fc_driver.copy_volume_to_image("vol1", str(out), "qcow2", FC)
    check = tmp_path / "check.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out), str(check)], check=True)
    assert _head(check, 65536) == b"\x6b" * 65536


def test_image_opts_escape_commas():
    opts = iscsi_copy.image_opts({"target_portal": "[::1]:3260", "target_iqn": "iqn.x",
                                  "target_lun": 2, "auth_method": "CHAP",
                                  "auth_username": "u,1", "auth_password": "p"},
                                 "chap0", "iqn.i")
    assert opts == ("driver=iscsi,transport=tcp,portal=[::1]:3260,target=iqn.x,"
                    "lun=2,initiator-name=iqn.i,user=u,,1,password-secret=chap0")
