"""The ISE simulator itself, over real HTTP on 127.0.0.1 (ephemeral ports).

Most tests run it in this process without a data path (fast); the tgtd
tests present volumes over real iSCSI and read them with qemu-img, and one
runs ``tools/ise-simulator`` as a process to check that SIGTERM removes its
exports.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import requests

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

from ise_sim.common import GIB
from ise_sim.server import Simulator
from ise_sim.state import Array

from tests import stack

PASSWORD = "sim-" + uuid.uuid4().hex[:8]
AUTH = ("admin", PASSWORD)
DELAY = 0.05


def poll(check, timeout: float = 5.0):
    """``check()`` until truthy, at most ``timeout`` seconds; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class Client:
    """A bare client of one simulator (the driver proper lives elsewhere)."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        host, port = sim.addresses[0]
        self.base = f"http://{host}:{port}"
        self.gid = ET.fromstring(self.get("/query").content).findtext("globalid")
        self.arr = f"/storage/arrays/{self.gid}"

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.base + path

    def get(self, path, params=None, **kw):
        return requests.get(self.url(path), params=params, auth=AUTH, timeout=5, **kw)

    def post(self, path, data=None, **kw):
        kw.setdefault("timeout", 5)
        return requests.post(self.url(path), data=data, auth=AUTH, **kw)  # noqa: S113 - kw has it

    def put(self, path, params=None):
        return requests.put(self.url(path), params=params, auth=AUTH, timeout=5)

    def delete(self, path):
        return requests.delete(self.url(path), auth=AUTH, timeout=5)

    def volume(self, name: str):
        resp = self.get(self.arr + "/volumes", {"name": name})
        return ET.fromstring(resp.content).find("volume") if resp.status_code == 200 else None

    def status(self, name: str) -> str:
        vol = self.volume(name)
        return "" if vol is None else vol.find("status").get("string").upper()

    def create(self, name: str, size: int = 1, redundancy: int = 1, wait=True):
        resp = self.post(self.arr + "/volumes", {"name": name, "size": size, "pool": 1,
                                                 "redundancy": redundancy})
        assert resp.status_code == 201, resp.text
        if wait:
            assert poll(lambda: self.status(name) == "OPERATIONAL")
        return resp

    def host(self, name: str, *endpoints: str):
        resp = self.post(self.arr + "/hosts",
                         [("name", name), *(("endpoint", e) for e in endpoints),
                          ("os", "openstack")])
        assert resp.status_code == 201, resp.text
        return resp

    def faults(self, **switches):
        return self.post("/_sim/faults", json=switches).json()

    def state(self) -> dict:
        return self.get("/_sim/state").json()

    def copy(self, source: str, name: str, kind: str = "clone"):
        src = self.volume(source).get("self")
        resp = self.post(src, {"name": name, "type": kind})
        assert resp.status_code == 202, resp.text
        assert poll(lambda: self.status(name) == "PREPARED")
        new = self.volume(name)
        assert "PREPARED" in new.findtext("status/details/detail")
        resp = self.put(new.get("self"), {kind: "true"})
        assert resp.status_code == 201, resp.text
        assert poll(lambda: self.status(name) == "OPERATIONAL")


def start(state_dir, exporter_factory=None, secondary=False, **kw) -> Simulator:
    array = Array(str(state_dir), delay=DELAY, exporter_factory=exporter_factory, **kw)
    sim = Simulator(array, "admin", PASSWORD, ("127.0.0.1", 0))
    if secondary:  # the same port on another loopback address, as a real ISE
        port = sim.addresses[0][1]
        sim.servers[0].server_close()
        sim = Simulator(array, "admin", PASSWORD, ("127.0.0.1", port),
                        ("127.0.0.2", port))
    sim.start()
    return sim


@pytest.fixture
def state_dir():
    path = Path(tempfile.mkdtemp(prefix="isesim-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sim(state_dir):
    sim = start(state_dir, secondary=True)
    yield sim
    sim.stop()


@pytest.fixture
def api(sim):
    return Client(sim)


# -- discovery, auth, CHAP, controllers ------------------------------------------

def test_query_lists_capabilities_and_two_controllers(api):
    root = ET.fromstring(api.get("/query").content)
    caps = {c.get("value") for c in root.find("capabilities")}
    assert {"49003", "49004", "49005", "49006", "49007"} <= caps
    ranks = {c.find("rank").get("value"): c.findtext("ipaddress")
             for c in root.find("controllers")}
    assert ranks == {"1": "127.0.0.1", "0": "127.0.0.2"}


def test_secondary_controller_serves_the_same_array(api):
    api.create("on-primary")
    host, port = api.sim.addresses[1]
    resp = requests.get(f"http://{host}:{port}{api.arr}/volumes", params={"name": "on-primary"},
                        auth=AUTH, timeout=5)
    assert resp.status_code == 200
    assert f"http://{host}:{port}/" in ET.fromstring(resp.content).find("volume").get("self")


@pytest.mark.parametrize("auth", [None, ("admin", "wrong"), ("other", PASSWORD)])
def test_basic_auth_is_required(api, auth):
    resp = requests.get(api.base + "/query", auth=auth, timeout=5)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


def test_unknown_array_and_resource_are_404(api):
    assert api.get("/storage/arrays/NOPE/volumes").status_code == 404
    assert api.get(api.arr + "/nothing").status_code == 404


def test_chap_settings_are_reported_and_configurable(api):
    chapin = ET.fromstring(api.get(api.arr + "/ionetworks").content).find("chap/chapin")
    assert chapin.get("value") == "1" and chapin.findtext("username").startswith("isesim-")
    assert api.post("/_sim/chap", {"enabled": "0"}).status_code == 200
    chapin = ET.fromstring(api.get(api.arr + "/ionetworks").content).find("chap/chapin")
    assert chapin.get("value") == "0"
    api.post("/_sim/chap", {"enabled": "1", "username": "u1", "password": "p1secret"})
    chapin = ET.fromstring(api.get(api.arr + "/ionetworks").content).find("chap/chapin")
    assert (chapin.get("value"), chapin.findtext("username"),
            chapin.findtext("password")) == ("1", "u1", "p1secret")


def test_controllers_report_the_iqn_and_fc_wwns(api):
    root = ET.fromstring(api.get(api.arr + "/controllers").content)
    ioports = root.findall("controller/ioports/ioport")
    assert {p.findtext("ipaddresses/ipaddress") for p in ioports} == {"127.0.0.1"}
    assert {p.findtext("endpoint/globalid") for p in ioports} == {api.state()["iqn"]}
    wwns = [w.text for w in root.iter("wwn")]
    assert len(wwns) == 4 and len(set(wwns)) == 4 and all(len(w) == 16 for w in wwns)


# -- volumes ---------------------------------------------------------------------

def test_create_volume_is_asynchronous_and_sparse(api, state_dir):
    resp = api.create("vol1", size=2, wait=False)
    vol = ET.fromstring(resp.content).find("volume")
    assert resp.headers["Content-Location"] == vol.get("self")
    assert vol.get("self").startswith(api.base + api.arr + "/volumes/")
    assert vol.find("status").get("string") == "Creating"
    assert poll(lambda: api.status("vol1") == "OPERATIONAL")
    assert api.volume("vol1").find("status").get("value") == "0"
    assert api.volume("vol1").findtext("size") == "2"
    path = state_dir / "volumes" / f"{vol.findtext('globalid')}.img"
    assert path.stat().st_size == 2 * GIB and path.stat().st_blocks == 0
    assert api.get(vol.get("self")).status_code == 200


def test_create_volume_errors(api):
    api.create("dup")
    assert api.post(api.arr + "/volumes", {"name": "dup", "size": 1}).status_code == 409
    for bad in ({"size": 1}, {"name": "x", "size": "big"}, {"name": "x", "size": 0},
                {"name": "x", "size": 1, "pool": 9}, {"name": "x", "size": 1, "redundancy": 3},
                {"name": "x", "size": 100000}):
        resp = api.post(api.arr + "/volumes", bad)
        assert resp.status_code == 400, bad
        assert ET.fromstring(resp.content).tag == "error"
    assert api.get(api.arr + "/volumes", {"name": "missing"}).status_code == 404


def test_names_are_url_decoded(api):
    name = "a b&c=d+e%/é"
    api.create(name)
    assert api.volume(name).findtext("name") == name
    assert [v["name"] for v in api.state()["volumes"].values()] == [name]


def test_snapshot_and_clone_copy_the_data(api, state_dir):
    api.create("src")
    src_file = state_dir / "volumes" / f"{api.volume('src').findtext('globalid')}.img"
    with open(src_file, "r+b") as f:
        f.seek(GIB // 2)
        f.write(b"ISE-DATA")
    api.copy("src", "snap", "snapshot")
    api.copy("snap", "clone")
    for name, kind in (("snap", "snapshot"), ("clone", "clone")):
        vol = api.volume(name)
        assert vol.findtext("type") == kind and vol.findtext("size") == "1"
        with open(state_dir / "volumes" / f"{vol.findtext('globalid')}.img", "rb") as f:
            f.seek(GIB // 2)
            assert f.read(8) == b"ISE-DATA"


def test_prepare_and_commit_errors(api):
    api.create("base")
    src = api.volume("base").get("self")
    assert api.post(src, {"name": "x", "type": "mirror"}).status_code == 400
    assert api.post(src, {"name": "base", "type": "clone"}).status_code == 409
    api.create("busy", wait=False)
    resp = api.post(api.volume("busy").get("self"), {"name": "y", "type": "clone"})
    assert resp.status_code == 400 and "valid state" in ET.fromstring(resp.content).text
    # committing an OPERATIONAL volume, or with the wrong kind
    assert api.put(src, {"clone": "true"}).status_code == 400
    assert api.post(src, {"name": "c", "type": "clone"}).status_code == 202
    assert poll(lambda: api.status("c") == "PREPARED")
    assert api.put(api.volume("c").get("self"), {"snapshot": "true"}).status_code == 400


def test_modify_extend_rename_qos(api, state_dir):
    api.create("m", size=1)
    url = api.volume("m").get("self")
    assert api.put(url, {"size": 3}).status_code == 201
    path = state_dir / "volumes" / f"{api.volume('m').findtext('globalid')}.img"
    assert path.stat().st_size == 3 * GIB
    assert api.put(url, {"size": 2}).status_code == 400
    assert api.put(url, {"IOPSmin": 10, "IOPSmax": 100, "IOPSburst": 200}).status_code == 201
    assert api.volume("m").findtext("IOPSmax") == "100"
    api.create("other")
    assert api.put(url, {"name": "other"}).status_code == 409
    assert api.put(url, {"name": "renamed"}).status_code == 201
    assert api.volume("renamed").get("self") == url and api.volume("m") is None
    assert api.put(url, {"bogus": 1}).status_code == 400
    assert api.put(api.arr + "/volumes/nope", {"size": 9}).status_code == 404


def test_delete_is_asynchronous(api, state_dir):
    api.create("gone")
    url = api.volume("gone").get("self")
    assert api.delete(url).status_code == 204
    assert api.status("gone") in ("DELETING", "")
    assert poll(lambda: api.get(api.arr + "/volumes", {"name": "gone"}).status_code == 404)
    assert api.get(url).status_code == 404 and api.delete(url).status_code == 404
    assert list((state_dir / "volumes").iterdir()) == []


def test_pool_capacity_follows_volumes(api):
    def pool():
        node = ET.fromstring(api.get("/storage/pools").content).find("pool")
        return (int(node.find("available").get("total")), int(node.find("used").get("total")),
                {r.tag: int(r.text) for r in node.find("used/byredundancy")},
                len(node.find("volumes")))
    assert pool() == (1024, 0, {"raid-0": 0, "raid-1": 0, "raid-5": 0, "raid-6": 0}, 0)
    api.create("r1", size=10, redundancy=1)
    api.create("r0", size=4, redundancy=0)
    free, used, by, count = pool()
    assert (free, used, by["raid-1"], by["raid-0"], count) == (1000, 24, 10, 4, 2)
    api.delete(api.volume("r1").get("self"))
    assert poll(lambda: pool()[0] == 1020)
    pool_one = ET.fromstring(api.get("/storage/pools/1").content).find("pool")
    assert pool_one.findtext("name") == "Pool 1" and pool_one.findtext("id") == "1"
    assert api.get("/storage/pools/7").status_code == 404


# -- hosts and allocations ---------------------------------------------------------

def test_hosts(api):
    resp = api.host("fc1", "2100000000000001", "2100000000000002")
    url = resp.headers["Content-Location"]
    host = ET.fromstring(api.get(url).content).find("host")
    assert [e.text for e in host.iter("globalid")][1:] == ["2100000000000001", "2100000000000002"]
    assert host.findtext("type") == "openstack"
    assert api.post(api.arr + "/hosts", {"name": "FC1", "endpoint": "x"}).status_code == 409
    assert api.post(api.arr + "/hosts", {"name": "h2", "endpoint": "2100000000000002"}
                    ).status_code == 409
    assert api.post(api.arr + "/hosts", {"name": "h3"}).status_code == 400
    assert api.put(url, {"os": "linux"}).status_code == 201
    assert ET.fromstring(api.get(api.arr + "/hosts").content).findtext("host/type") == "linux"
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404


def test_allocations(api):
    api.create("v1")
    api.create("v2")
    api.host("h1", "2100000000000011")
    api.host("h2", "2100000000000012")
    resp = api.post(api.arr + "/allocations", {"volumename": "v1", "hostname": "h1"})
    assert resp.status_code == 201
    alloc = ET.fromstring(api.get(resp.headers["Content-Location"]).content).find("allocation")
    assert alloc.findtext("lun") == "1" and alloc.findtext("volume/volumename") == "v1"
    assert alloc.findtext("endpoints/endpoint/hostname") == "h1"
    again = api.post(api.arr + "/allocations", {"volumename": "v1", "hostname": "h1"})
    assert again.status_code == 409
    assert again.headers["Content-Location"] == resp.headers["Content-Location"]
    # the same volume keeps its LUN for another host; another volume gets the next
    shared = api.post(api.arr + "/allocations", {"volumename": "v1", "hostname": "h2"})
    assert ET.fromstring(shared.content).findtext("allocation/lun") == "1"
    second = api.post(api.arr + "/allocations", {"volumename": "v2", "hostname": "h1",
                                                  "lun": 7})
    assert ET.fromstring(second.content).findtext("allocation/lun") == "7"
    for bad in ({"volumename": "v2", "hostname": "h2", "lun": 1},
                {"volumename": "v1", "hostname": "nohost"}, {"volumename": "v1"}):
        assert api.post(api.arr + "/allocations", bad).status_code in (400, 404), bad

    def count(**filters):
        return len(ET.fromstring(api.get(api.arr + "/allocations", filters).content))
    assert (count(), count(name="v1"), count(hostname="H1"), count(name="v2", hostname="h2")) \
        == (3, 2, 2, 0)
    # a presented volume or a host with allocations cannot go
    assert api.delete(api.volume("v1").get("self")).status_code == 400
    h1 = ET.fromstring(api.get(api.arr + "/hosts", {"name": "h1"}).content).find("host")
    assert api.delete(h1.get("self")).status_code == 409
    assert api.delete(resp.headers["Content-Location"]).status_code == 204
    assert api.delete(resp.headers["Content-Location"]).status_code == 404
    assert count(hostname="h1") == 1


# -- persistence, faults, reset ---------------------------------------------------

def test_state_survives_a_restart(state_dir):
    sim = start(state_dir)
    api = Client(sim)
    api.create("keep", size=5)
    api.create("pending", wait=False)
    api.host("h", "2100000000000021")
    api.post(api.arr + "/allocations", {"volumename": "keep", "hostname": "h"})
    gid = api.gid
    sim.stop()
    assert oct((state_dir / "state.json").stat().st_mode & 0o777) == "0o600"
    sim = start(state_dir)
    try:
        api = Client(sim)
        assert api.gid == gid
        assert api.status("keep") == "OPERATIONAL" and api.status("pending") == "OPERATIONAL"
        assert len(ET.fromstring(api.get(api.arr + "/allocations").content)) == 1
        node = ET.fromstring(api.get("/storage/pools").content).find("pool/used")
        assert node.get("total") == "12"
    finally:
        sim.stop()


def test_fault_http500_counts_down(api):
    assert api.faults(http500=2)["http500"] == 2
    assert [api.get("/query").status_code for _ in range(3)] == [500, 500, 200]


def test_fault_slow_answer_and_retried_post_make_one_volume(api):
    api.faults(slow=1.0)
    with pytest.raises(requests.Timeout):
        api.post(api.arr + "/volumes", {"name": "once", "size": 1}, timeout=0.3)
    retry = api.post(api.arr + "/volumes", {"name": "once", "size": 1})
    assert retry.status_code == 409
    assert [v["name"] for v in api.state()["volumes"].values()] == ["once"]


def test_fault_invalid_state(api):
    api.create("src")
    api.faults(invalid_state=1)
    src = api.volume("src").get("self")
    resp = api.post(src, {"name": "s", "type": "snapshot"})
    assert resp.status_code == 400
    assert "not in a valid state" in ET.fromstring(resp.content).text.lower()
    assert api.post(src, {"name": "s", "type": "snapshot"}).status_code == 202


def test_fault_primary_down(api):
    api.faults(primary_down=1)
    with pytest.raises(requests.ConnectionError):
        api.get("/query")
    host, port = api.sim.addresses[1]
    assert requests.get(f"http://{host}:{port}/query", auth=AUTH, timeout=5).status_code == 200
    assert api.faults(primary_down=0)["primary_down"] == 0  # admin still answers
    assert api.get("/query").status_code == 200


def test_fault_errors_and_reset(api):
    assert api.post("/_sim/faults", {"nonsense": 1}).status_code == 400
    assert api.post("/_sim/faults", {"slow": "soon"}).status_code == 400
    api.create("v")
    api.host("h", "2100000000000031")
    api.faults(http500=5)
    assert api.post("/_sim/reset").status_code == 200
    state = api.state()
    assert (state["volumes"], state["hosts"], state["allocations"]) == ({}, {}, {})
    assert api.get("/query").status_code == 200


# -- the iSCSI data path through tgtd ----------------------------------------------

def _tgtd_targets(iqn: str) -> list[str]:
    out = subprocess.run(["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("Target ") and iqn in line]


def _qemu_info(state: dict, chap: dict, lun: int, initiator: str, password: str,
               directory: Path) -> subprocess.CompletedProcess:
    secret = directory / f"chap-{uuid.uuid4().hex[:6]}"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    opts = (f"driver=iscsi,transport=tcp,portal=127.0.0.1:3260,target={state['iqn']},"
            f"lun={lun},initiator-name={initiator},user={chap['username']},"
            "password-secret=chap")
    try:
        return subprocess.run(["qemu-img", "info", "--output=json", "--object",
                               f"secret,id=chap,file={secret}", "--image-opts", opts],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        secret.unlink()


@pytest.fixture
def iscsi_sim(state_dir):
    stack.require_tgtd()
    from ise_sim.iscsi import TgtdExporter
    sim = start(state_dir, exporter_factory=TgtdExporter)
    yield sim
    sim.stop()
    assert _tgtd_targets(sim.array.iqn) == []


@pytest.mark.stack
def test_iscsi_presentation_serves_the_volume_with_chap(iscsi_sim, state_dir):
    api = Client(iscsi_sim)
    chap = iscsi_sim.array.chap()
    initiator = f"iqn.2026-11.test.isesim:{uuid.uuid4().hex[:8]}"
    api.create("iv", size=1)
    api.host("ih", initiator)
    resp = api.post(api.arr + "/allocations", {"volumename": "iv", "hostname": "ih"})
    assert resp.status_code == 201, resp.text
    lun = int(ET.fromstring(resp.content).findtext("allocation/lun"))
    state = api.state()
    assert len(_tgtd_targets(state["iqn"])) == 1
    info = _qemu_info(state, chap, lun, initiator, chap["password"], state_dir)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["virtual-size"] == GIB
    bad = _qemu_info(state, chap, lun, initiator, "wrong-password", state_dir)
    assert bad.returncode != 0
    stranger = _qemu_info(state, chap, lun, initiator + "-other", chap["password"], state_dir)
    assert stranger.returncode != 0  # the ACL names the host's initiator only
    # extending re-reads the size; unpresenting the last allocation unexports
    assert api.put(api.volume("iv").get("self"), {"size": 2}).status_code == 201
    info = _qemu_info(state, chap, lun, initiator, chap["password"], state_dir)
    assert json.loads(info.stdout)["virtual-size"] == 2 * GIB
    assert api.delete(resp.headers["Content-Location"]).status_code == 204
    assert _tgtd_targets(state["iqn"]) == []


@pytest.mark.stack
def test_restart_restores_the_export(state_dir):
    stack.require_tgtd()
    from ise_sim.iscsi import TgtdExporter
    sim = start(state_dir, exporter_factory=TgtdExporter)
    try:
        api = Client(sim)
        api.create("rv")
        api.host("rh", f"iqn.2026-11.test.isesim:{uuid.uuid4().hex[:8]}")
        api.post(api.arr + "/allocations", {"volumename": "rv", "hostname": "rh"})
    finally:
        sim.stop()
    iqn = sim.array.iqn
    assert _tgtd_targets(iqn) == []  # a clean stop unexports
    sim = start(state_dir, exporter_factory=TgtdExporter)
    try:
        assert len(_tgtd_targets(iqn)) == 1
    finally:
        sim.stop()
    assert _tgtd_targets(iqn) == []


@pytest.mark.stack
def test_fc_presentation_exports_nothing(iscsi_sim):
    api = Client(iscsi_sim)
    api.create("fv")
    api.host("fh", "2100000000000041")
    resp = api.post(api.arr + "/allocations", {"volumename": "fv", "hostname": "fh"})
    assert resp.status_code == 201
    assert _tgtd_targets(api.state()["iqn"]) == []


def test_export_failure_answers_500_and_keeps_nothing(state_dir):
    from ise_sim.iscsi import TgtdExporter
    sim = start(state_dir, exporter_factory=lambda iqn: TgtdExporter(
        iqn, str(state_dir / "no-tgtd-socket")))
    try:
        api = Client(sim)
        api.create("xv")
        api.host("xh", "iqn.2026-11.test.isesim:nosock")
        resp = api.post(api.arr + "/allocations", {"volumename": "xv", "hostname": "xh"})
        assert resp.status_code == 500 and "iSCSI" in ET.fromstring(resp.content).text
        assert api.state()["allocations"] == {}
        assert api.state()["volumes"][api.volume("xv").findtext("globalid")]["lun"] is None
    finally:
        sim.stop()  # tgtd absent: logged, not raised


@pytest.mark.stack
def test_sigterm_removes_the_exports(state_dir):
    stack.require_tgtd()
    env = dict(os.environ, ISE_SIM_PASSWORD=PASSWORD)
    proc = subprocess.Popen(
        [sys.executable, str(TOOLS / "ise-simulator"), "--state-dir", str(state_dir),
         "--listen", "127.0.0.1:0", "--delay", str(DELAY)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        ready = proc.stdout.readline().split()
        assert ready[0] == "READY", ready
        base = f"http://{ready[1]}"
        gid = ET.fromstring(requests.get(base + "/query", auth=AUTH, timeout=5).content
                            ).findtext("globalid")
        arr = f"{base}/storage/arrays/{gid}"
        requests.post(arr + "/volumes", {"name": "p", "size": 1}, auth=AUTH, timeout=5)
        requests.post(arr + "/hosts", {"name": "ph", "endpoint": "iqn.2026-11.test:p"},
                      auth=AUTH, timeout=5)
        iqn = requests.get(base + "/_sim/state", auth=AUTH, timeout=5).json()["iqn"]
        assert poll(lambda: requests.post(arr + "/allocations", {"volumename": "p",
                                                                 "hostname": "ph"},
                                          auth=AUTH, timeout=5).status_code == 201)
        assert len(_tgtd_targets(iqn)) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert _tgtd_targets(iqn) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the command line ---------------------------------------------------------------

def test_cli_password_sources(state_dir, monkeypatch):
    from ise_sim import cli
    monkeypatch.delenv(cli.PASSWORD_ENV, raising=False)
    args = cli.parser().parse_args(["--state-dir", str(state_dir)])
    generated = cli.read_password(args, state_dir)
    assert generated and cli.read_password(args, state_dir) == generated
    assert oct((state_dir / "api-password").stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv(cli.PASSWORD_ENV, "from-env")
    assert cli.read_password(args, state_dir) == "from-env"
    secret = state_dir / "pw"
    secret.write_text("from-file\n")
    args = cli.parser().parse_args(["--state-dir", str(state_dir), "--password-file",
                                    str(secret), "--listen", ":0"])
    assert cli.read_password(args, state_dir) == "from-file"
    assert args.listen == ("127.0.0.1", 0)
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--state-dir", "x", "--listen", "nowhere"])
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--state-dir", "x", "--listen", "0.0.0.0:8080"])


def test_cli_build_sets_chap_and_pools(state_dir, monkeypatch):
    from ise_sim import cli
    monkeypatch.setenv(cli.PASSWORD_ENV, PASSWORD)
    chap_file = state_dir / "chap"
    chap_file.write_text("chap-secret-1\n")
    args = cli.parser().parse_args(
        ["--state-dir", str(state_dir / "s"), "--listen", "127.0.0.1:0", "--no-iscsi",
         "--pools", "2", "--pool-size", "100", "--chap-user", "cu",
         "--chap-password-file", str(chap_file)])
    sim = cli.build(args)
    sim.start()
    try:
        api = Client(sim)
        assert len(ET.fromstring(api.get("/storage/pools").content)) == 2
        chapin = ET.fromstring(api.get(api.arr + "/ionetworks").content).find("chap/chapin")
        assert (chapin.findtext("username"), chapin.findtext("password")) == \
            ("cu", "chap-secret-1")
    finally:
        sim.stop()
