"""Unit tests of hvplug.target.tgt.TgtAdm against a fake tgtd.

The fake listens on a unix socket and speaks tgtd's management protocol
with tgtd 1.0.85's semantics (error numbers, duplicate names, accounts
unbound on delete, no 'iser' driver unless asked), so the helper runs its
real wire path.  Golden stanzas live in tests/data/target/tgt_*.conf;
``HVPLUG_REGEN_GOLDEN=1`` rewrites them.
"""

import difflib
import logging
import multiprocessing
import os
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from hvplug import exception
from hvplug.conf import CONF
from hvplug.target import registry, tgt, tgtd_ipc
from hvplug.target.export import Export
from hvplug.target.tgtd_ipc import Err, Mode, Op

DATA = Path(__file__).resolve().parents[2] / "data" / "target"
PASSWORD = "GoldenPassw0rd42"


class FakeTgtd:
    """tgtd's management socket, with targets, LUNs, accounts and ACLs."""

    def __init__(self, llds=("iscsi",)):
        self.dir = tempfile.mkdtemp(prefix="hvtgt")
        self.path = os.path.join(self.dir, "socket.0")
        self.llds = set(llds)
        self.targets: dict[int, dict] = {}
        self.accounts: dict[str, str] = {}
        self.requests: list[tuple] = []  # (lld, mode, op, tid, lun, params)
        self.fail: dict[tuple, list[int]] = {}  # (mode, op) -> errors to answer
        self.after = None  # called with each request once it is handled
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(128)
        threading.Thread(target=self._serve, daemon=True).start()

    def add_target(self, tid, iqn, lld="iscsi", path=None):
        self.targets[tid] = {"iqn": iqn, "lld": lld, "luns": {}, "pages": {},
                             "accounts": [], "acls": []}
        if path:
            self.targets[tid]["luns"][1] = path

    def by_iqn(self, iqn):
        return next(((tid, t) for tid, t in self.targets.items() if t["iqn"] == iqn),
                    (None, None))

    def count(self, mode, op, tid=-1):
        return sum(1 for r in self.requests if r[1:4] == (mode, op, tid))

    def restart(self):
        """What a kill -9 and a new tgtd leave: nothing."""
        self.targets.clear()
        self.accounts.clear()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                header = _recv(conn, tgtd_ipc.REQ.size)
                fields = tgtd_ipc.REQ.unpack(header)
                body = _recv(conn, fields[3] - len(header))
                err, text = self._handle(fields, body)
                data = text.encode() + b"\0" if text else b""
                conn.sendall(tgtd_ipc.RSP.pack(err, 8 + len(data)) + data)

    def _handle(self, fields, body):
        mode, op, lld, _, tid, _, lun, *_ = fields
        lld = lld.rstrip(b"\0").decode()
        text = body.split(b"\0")[0].decode()
        params = dict(p.split("=", 1) for p in text.split(",") if "=" in p)
        request = (lld, mode, op, tid, None if lun == tgtd_ipc.ALL_LUNS else lun, params)
        self.requests.append(request)
        if lld not in self.llds:
            return Err.NO_DRIVER, ""
        if self.fail.get((mode, op)):
            return self.fail[(mode, op)].pop(0), ""
        err, out = getattr(self, f"_{Mode(mode).name.lower()}")(op, tid, lun, params, lld)
        if self.after and err == 0:
            self.after(request)
        return err, out

    def _target(self, op, tid, lun, params, lld):
        target = self.targets.get(tid)
        if op == Op.NEW:
            if target or self.by_iqn(params["targetname"])[1]:
                return Err.TARGET_EXIST, ""
            self.add_target(tid, params["targetname"], lld)
        elif op == Op.SHOW:
            if tid == -1:
                return 0, "".join(self._show(t) for t in sorted(self.targets))
            return (0, "MaxRecvDataSegmentLength=8192\n") if target else (Err.NO_TARGET, "")
        elif target is None:
            return Err.NO_TARGET, ""
        elif op == Op.DELETE:
            del self.targets[tid]
        elif op == Op.BIND:
            if params["initiator-address"] in target["acls"]:
                return Err.ACL_EXIST, ""
            target["acls"].append(params["initiator-address"])
        return 0, ""

    def _device(self, op, tid, lun, params, lld):
        target = self.targets.get(tid)
        if target is None:
            return Err.NO_TARGET, ""
        if op == Op.NEW:
            if lun in target["luns"]:
                return Err.LUN_EXIST, ""
            if not os.path.exists(params["path"]) or params.get("bstype") != "rdwr":
                return Err.INVALID_REQUEST, ""
            target["luns"][lun] = params["path"]
        elif lun not in target["luns"]:
            return Err.NO_LUN, ""
        elif op == Op.UPDATE:
            target["pages"][lun] = params["mode_page"]
        return 0, ""

    def _account(self, op, tid, lun, params, lld):
        user = params.get("user")
        if op == Op.NEW:
            if user in self.accounts:
                return Err.USER_EXIST, ""
            self.accounts[user] = params["password"]
            return 0, ""
        if user not in self.accounts:
            return Err.NO_USER, ""
        if op == Op.DELETE:
            del self.accounts[user]
            for target in self.targets.values():
                if user in target["accounts"]:
                    target["accounts"].remove(user)
            return 0, ""
        target = self.targets.get(tid)
        if target is None:
            return Err.NO_TARGET, ""
        bound = user in target["accounts"]
        if op == Op.BIND:
            if bound:
                return Err.USER_EXIST, ""
            target["accounts"].append(user)
        elif not bound:
            return Err.NO_USER, ""
        else:
            target["accounts"].remove(user)
        return 0, ""

    def _show(self, tid):
        t = self.targets[tid]
        lines = [f"Target {tid}: {t['iqn']}", "    System information:",
                 f"        Driver: {t['lld']}", "        State: ready",
                 "    I_T nexus information:", "    LUN information:",
                 "        LUN: 0", "            Type: controller",
                 "            Backing store path: None"]
        for lun, path in sorted(t["luns"].items()):
            lines += [f"        LUN: {lun}", "            Type: disk",
                      "            Size: 8 MB, Block size: 512",
                      "            Backing store type: rdwr",
                      f"            Backing store path: {path}"]
        if t["lld"] == "iscsi":  # tgtd lists accounts of iscsi targets only
            lines += ["    Account information:"] + [f"        {a}" for a in t["accounts"]]
        lines += ["    ACL information:"] + [f"        {a}" for a in t["acls"]]
        return "\n".join(lines) + "\n"

    def close(self):
        self.server.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def _recv(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def tgtd():
    fake = FakeTgtd()
    yield fake
    fake.close()


@pytest.fixture
def dirs(tmp_path, config_fixture):
    volumes, exports = tmp_path / "volumes", tmp_path / "exports"
    config_fixture.config(group="target", volumes_dir=str(volumes),
                          exports_dir=str(exports), backing_roots=[str(tmp_path)])
    return volumes, exports


@pytest.fixture
def make_target(tgtd, dirs):
    def make(**kwargs):
        return tgt.TgtAdm(CONF.target, socket_path=tgtd.path, **kwargs)
    return make


@pytest.fixture
def target(make_target):
    return make_target()


@pytest.fixture
def backing(tmp_path):
    def make(name="vol.img"):
        path = tmp_path / name
        path.write_bytes(b"")
        return str(path)
    return make


def assert_golden(text: str, name: str) -> None:
    path = DATA / name
    if os.environ.get("HVPLUG_REGEN_GOLDEN"):
        path.write_text(text)
    expected = path.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                        f"golden/{name}", "generated"))
    assert text == expected, diff


def golden_export(**kwargs) -> Export:
    volume_id = "4f1c9a2e-0000-4000-8000-00000000c0de"
    values = {"volume_id": volume_id, "path": "/srv/volumes/4f1c.img",
              "iqn": f"iqn.2010-10.org.openstack:volume-{volume_id}",
              "helper": "tgtadm", "portals": ["192.0.2.10:3260"],
              "auth_username": "GoldenUser0123456789", "auth_password": PASSWORD}
    values.update(kwargs)
    return Export(**values)


# The persisted stanza -----------------------------------------------------

@pytest.mark.parametrize(("name", "kwargs", "write_cache"), [
    ("tgt_chap.conf", {}, True),
    ("tgt_no_chap.conf", {"auth_method": None, "auth_username": None,
                          "auth_password": None}, True),
    ("tgt_iser.conf", {"iser": True}, True),
    ("tgt_write_cache_off.conf", {}, False),
])
def test_stanza_golden(make_target, config_fixture, name, kwargs, write_cache):
    config_fixture.config(group="target", iscsi_write_cache=write_cache)
    text = make_target().stanza(golden_export(**kwargs))
    assert_golden(text, name)
    assert "None" not in text and "lld" not in text and "IncomingUser" not in text
    directives = [line.split()[0] for line in text.splitlines()
                  if line.strip() and not line.startswith(("#", "<"))]
    expected = ["backing-store", "driver", "incominguser", "write-cache"]
    if "auth_method" in kwargs:
        expected.remove("incominguser")
    assert directives == expected


@pytest.mark.parametrize("field", ["path", "iqn", "auth_username", "auth_password"])
@pytest.mark.parametrize("bad", ["two words", "a#b", "x\nwrite-cache off", "<t>", "a,b", ""])
def test_stanza_refuses_values_that_break_lines(target, field, bad):
    with pytest.raises(exception.InvalidInput) as info:
        target.stanza(golden_export(**{field: bad}))
    if field == "auth_password":
        assert bad not in info.value.message or not bad


def test_create_export_builds_target_stanza_and_record(target, tgtd, dirs, backing):
    path = backing()
    export = target.create_export("vol-1", path)
    tid, live = tgtd.by_iqn("iqn.2010-10.org.openstack:volume-vol-1")
    assert export.tid == tid and live["lld"] == "iscsi"
    assert live["luns"] == {1: path} and live["acls"] == ["ALL"]
    assert live["accounts"] == [export.auth_username]
    assert tgtd.accounts[export.auth_username] == export.auth_password
    assert live["pages"] == {}  # write cache on: tgt's default page, as tgt-admin
    volumes = dirs[0]
    stanza = volumes / "volume-vol-1.conf"
    assert stanza.read_text() == target.stanza(export)
    assert f"incominguser {export.auth_username} {export.auth_password}\n" in stanza.read_text()
    assert stat.S_IMODE(stanza.stat().st_mode) == 0o600
    assert stat.S_IMODE(volumes.stat().st_mode) == 0o700
    assert stat.S_IMODE((volumes / ".lock").stat().st_mode) == 0o600
    assert sorted(p.name for p in volumes.iterdir()) == [".lock", "volume-vol-1.conf"]
    assert target.store.load("vol-1") == export
    assert target._target_exists(export)


def test_connection_info(target, backing):
    export = target.create_export("vol-ci", backing())
    info = target.initialize_connection("vol-ci", {"initiator": "iqn.1993-08.org.x:1"})
    assert info == {"driver_volume_type": "iscsi", "data": {
        "target_discovered": False, "target_portal": "127.0.0.1:3260",
        "target_iqn": export.iqn, "target_lun": 1, "volume_id": "vol-ci",
        "encrypted": False, "access_mode": "rw", "auth_method": "CHAP",
        "auth_username": export.auth_username, "auth_password": export.auth_password},
        "serial": "vol-ci"}


def test_write_cache_off_is_set_live_as_tgt_admin_does(make_target, tgtd, config_fixture,
                                                       backing):
    config_fixture.config(group="target", iscsi_write_cache=False)
    export = make_target().create_export("vol-wc", backing())
    _, live = tgtd.by_iqn(export.iqn)
    # tgt-admin: tgtadm --op update --mode logicalunit --lun=1 --params mode_page=...
    assert live["pages"] == {1: "8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:"
                                "0x14:0:0:0:0:0:0"}
    assert "write-cache off\n" in make_target().stanza_path(export).read_text()


def test_create_without_chap(target, tgtd, backing):
    export = target.new_export("vol-nc", backing())
    export.auth_method = export.auth_username = export.auth_password = None
    export.tid = target._target_create(export)
    _, live = tgtd.by_iqn(export.iqn)
    assert live["accounts"] == [] and tgtd.accounts == {}
    assert "incominguser" not in target.stanza_path(export).read_text()
    assert target._target_exists(export)


def test_stanza_write_is_atomic(target, tgtd, dirs, backing, monkeypatch):
    volumes, _ = dirs
    export = target.create_export("vol-at", backing())
    stanza = target.stanza_path(export)
    before = stanza.read_text()
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    target.store.remove("vol-at")  # so create_export writes the stanza again
    with pytest.raises(exception.TargetError, match="No space left on device"):
        target.create_export("vol-at", export.path)
    assert stanza.read_text() == before  # never half-written
    assert sorted(p.name for p in volumes.iterdir()) == [".lock", "volume-vol-at.conf"]
    assert synced, "the stanza must be fsynced before the rename"


# Failures leave nothing -----------------------------------------------------

@pytest.mark.parametrize("step", [(Mode.DEVICE, Op.NEW), (Mode.ACCOUNT, Op.NEW),
                                  (Mode.ACCOUNT, Op.BIND), (Mode.TARGET, Op.BIND)])
def test_failure_midway_leaves_nothing(target, tgtd, dirs, backing, step, caplog):
    caplog.set_level(logging.DEBUG)
    tgtd.fail[step] = [Err.NOMEM]
    with pytest.raises(exception.TargetError) as info:
        target.create_export("vol-f", backing())
    assert "tgtadm could not create target iqn.2010-10.org.openstack:volume-vol-f" \
        in str(info.value)
    assert "out of memory" in str(info.value)
    assert tgtd.targets == {} and tgtd.accounts == {}
    assert [p.name for p in dirs[0].iterdir()] == [".lock"]
    assert target.store.load("vol-f") is None
    passwords = [r[5]["password"] for r in tgtd.requests if "password" in r[5]]
    for password in passwords:
        assert password not in str(info.value)
        assert all(password not in r.getMessage() for r in caplog.records)


def test_backing_store_refused_by_tgtd_leaves_nothing(target, tgtd, dirs, tmp_path):
    path = tmp_path / "vol.img"
    path.write_bytes(b"")
    tgtd.fail[(Mode.DEVICE, Op.NEW)] = [Err.INVALID_REQUEST]
    with pytest.raises(exception.TargetError, match="invalid request"):
        target.create_export("vol-br", str(path))
    assert tgtd.targets == {} and tgtd.accounts == {}


@pytest.mark.parametrize("path", ["relative.img", "/nonexistent/hvplug/vol.img"])
def test_bad_backing_store_is_refused_before_anything(target, tgtd, dirs, path):
    with pytest.raises(exception.InvalidInput):
        target.create_export("vol-bp", path)
    assert tgtd.requests == []
    assert not dirs[0].exists() or list(dirs[0].iterdir()) == []


def test_iser_without_rdma_is_iser_unavailable_and_nothing_persisted(
        make_target, tgtd, dirs, backing):
    target = make_target(iser=True)
    with pytest.raises(exception.IserUnavailable) as info:
        target.create_export("vol-is", backing())
    message = str(info.value)
    assert message.startswith("iSER/RDMA is unavailable on this target host: ")
    assert "can't find the driver" in message and "Nothing was persisted." in message
    assert tgtd.targets == {} and tgtd.accounts == {}
    assert [p.name for p in dirs[0].iterdir()] == [".lock"]
    assert target.store.all() == []
    news = [r for r in tgtd.requests if r[1:3] == (Mode.TARGET, Op.NEW)]
    assert [r[0] for r in news] == ["iser"]


def test_iser_with_rdma_makes_an_iser_target(tgtd, dirs, backing, config_fixture):
    config_fixture.config(group="target", iscsi_protocol="iser")
    tgtd.llds.add("iser")
    target = registry.target_from_conf(CONF.target)
    assert isinstance(target, tgt.TgtAdm) and target.iser
    target = tgt.TgtAdm(CONF.target, socket_path=tgtd.path)
    export = target.create_export("vol-ir", backing())
    _, live = tgtd.by_iqn(export.iqn)
    assert live["lld"] == "iser" and live["luns"] == {1: export.path}
    assert "driver iser\n" in target.stanza_path(export).read_text()
    assert target.initialize_connection("vol-ir")["driver_volume_type"] == "iser"
    assert target._target_exists(export)  # tgtd shows no accounts for iser targets
    target.remove_export("vol-ir")
    assert tgtd.targets == {} and tgtd.accounts == {}


def test_iseradm_helper_means_tgtadm_with_iser(config_fixture, dirs, caplog):
    target = registry.target_from_conf(CONF.target, helper="iseradm")
    assert type(target) is tgt.TgtAdm and target.iser
    assert "deprecated" in caplog.text


# tids, concurrency, existing targets --------------------------------------------

def test_taken_tids_are_skipped_and_others_untouched(target, tgtd, backing):
    tgtd.add_target(1, "iqn.other:one")
    tgtd.add_target(2, "iqn.other:two")
    export = target.create_export("vol-t", backing())
    assert export.tid == 3
    assert [tgtd.targets[t]["iqn"] for t in (1, 2)] == ["iqn.other:one", "iqn.other:two"]
    assert target.create_export("vol-t2", backing("b.img")).tid == 4
    assert tgtd.count(Mode.TARGET, Op.SHOW) == 1  # one listing, for the collision


def test_concurrent_creates_get_distinct_tids(make_target, tgtd, backing):
    targets = [make_target() for _ in range(4)]
    barrier, results, errors = threading.Barrier(20), {}, []

    def create(i):
        barrier.wait()
        try:
            results[i] = targets[i % 4].create_export(f"vol-c{i}", backing(f"c{i}.img"))
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({e.tid for e in results.values()}) == 20
    assert len(tgtd.targets) == 20
    assert all(targets[0]._target_exists(e) for e in results.values())


def _create_in_child(socket_path, count, tag, backing_dir):
    target = tgt.TgtAdm(CONF.target, socket_path=socket_path)
    for i in range(count):
        path = os.path.join(backing_dir, f"{tag}{i}.img")
        open(path, "wb").close()
        target.create_export(f"vol-{tag}{i}", path)


def test_two_processes_create_safely(target, tgtd, backing, tmp_path):
    target.create_export("vol-p", backing())  # both children start from this tid hint
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_create_in_child, args=(tgtd.path, 8, tag, str(tmp_path)))
                for tag in ("a", "b")]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    assert [c.exitcode for c in children] == [0, 0]
    assert len(tgtd.targets) == 17
    assert all(len(t["luns"]) == 1 and len(t["accounts"]) == 1 for t in tgtd.targets.values())


def test_existing_target_of_same_iqn_is_completed(target, tgtd, backing):
    path = backing()
    tgtd.add_target(7, "iqn.2010-10.org.openstack:volume-vol-e")
    export = target.create_export("vol-e", path)
    assert export.tid == 7
    assert tgtd.targets[7]["luns"] == {1: path}
    assert tgtd.targets[7]["accounts"] == [export.auth_username]


def test_existing_target_serving_another_file_is_refused_never_replaced(
        target, tgtd, dirs, backing):
    old = backing("old.img")
    tgtd.add_target(7, "iqn.2010-10.org.openstack:volume-vol-r", path=old)
    tgtd.targets[7]["accounts"], tgtd.accounts["theirs"] = ["theirs"], "their-password"
    before = {tid: dict(t) for tid, t in tgtd.targets.items()}
    with pytest.raises(exception.IqnInUse) as err:
        target.create_export("vol-r", backing())
    message = str(err.value)
    assert err.value.exit_code == 2 and repr(old) in message and "tid 7" in message
    assert "--tid 7" in message and "another volume id" in message  # the fix
    assert tgtd.targets == before and tgtd.accounts == {"theirs": "their-password"}
    assert target.store.load("vol-r") is None
    assert [p.name for p in dirs[0].iterdir()] == [".lock"]  # no stanza left


def test_ensure_of_a_record_whose_iqn_serves_another_file_is_refused(
        target, tgtd, dirs, backing):
    export = target.create_export("vol-r", backing())
    tgtd.targets.clear()
    other = backing("other.img")
    tgtd.add_target(9, export.iqn, path=other)  # another tool took the IQN meanwhile
    with pytest.raises(exception.TargetError, match="already serves"):
        target.ensure_exports()
    assert tgtd.targets[9]["luns"] == {1: other} and list(tgtd.targets) == [9]
    assert target.store.load("vol-r") == export  # the record stays, to be fixed


def test_remove_never_deletes_a_target_of_the_same_iqn_serving_another_file(
        target, tgtd, backing, caplog):
    export = target.create_export("vol-r", backing())
    tgtd.targets.clear()
    tgtd.add_target(9, export.iqn, path=backing("other.img"))
    target.remove_export("vol-r")
    assert list(tgtd.targets) == [9] and target.store.load("vol-r") is None
    assert "it is not this export's, so it stays" in caplog.text


def test_lun_lost_after_creation_is_recreated(target, tgtd, backing, caplog):
    def drop_lun(request):
        if request[1:3] == (Mode.TARGET, Op.BIND):
            tgtd.targets[request[3]]["luns"].clear()

    tgtd.after = drop_lun
    export = target.create_export("vol-l", backing())
    assert tgtd.targets[export.tid]["luns"] == {1: export.path}
    assert "was missing after creation; re-created it" in caplog.text


def test_leftover_account_gets_the_recorded_password(target, tgtd, backing):
    export = target.create_export("vol-a", backing())
    tgtd.targets.clear()  # the target went away, its account stayed
    tgtd.accounts[export.auth_username] = "stale-password"
    target.ensure_export("vol-a")
    assert tgtd.accounts[export.auth_username] == export.auth_password


# Exists, ensure, remove --------------------------------------------------------

def test_exists_goes_by_iqn_not_by_recorded_tid(target, tgtd, backing):
    export = target.create_export("vol-x", backing())
    tgtd.restart()
    tgtd.add_target(export.tid, "iqn.other:took-the-tid", path=export.path)
    tgtd.targets[export.tid]["acls"].append("ALL")
    assert not target._target_exists(export)
    tgtd.add_target(export.tid + 1, export.iqn, path=export.path)
    tgtd.targets[export.tid + 1]["acls"].append("ALL")
    assert not target._target_exists(export)  # the CHAP account is not bound
    tgtd.targets[export.tid + 1]["accounts"].append(export.auth_username)
    assert target._target_exists(export)


def test_ensure_exports_after_restart_restores_all(target, tgtd, dirs, backing):
    exports = [target.create_export(f"vol-r{i}", backing(f"r{i}.img")) for i in range(5)]
    tgtd.restart()
    tgtd.add_target(1, "iqn.other:first-after-restart")
    target.stanza_path(exports[0]).unlink()  # lost too: ensure writes it again
    tgtd.requests.clear()
    restored = target.ensure_exports()
    assert sorted(e.volume_id for e in restored) == [f"vol-r{i}" for i in range(5)]
    for export in exports:
        tid, live = tgtd.by_iqn(export.iqn)
        assert live["luns"] == {1: export.path}
        assert tgtd.accounts[export.auth_username] == export.auth_password
        assert live["accounts"] == [export.auth_username]
        assert target.store.load(export.volume_id).tid == tid
        assert target.stanza_path(export).read_text() == target.stanza(export)
    assert tgtd.targets[1]["iqn"] == "iqn.other:first-after-restart"


def test_ensure_exports_lists_once_when_all_are_there(target, tgtd, backing):
    for i in range(10):
        target.create_export(f"vol-n{i}", backing(f"n{i}.img"))
    tgtd.requests.clear()
    assert len(target.ensure_exports()) == 10
    assert [r[1:3] for r in tgtd.requests] == [(Mode.TARGET, Op.SHOW)]


def test_ensure_exports_adopts_a_target_restored_elsewhere(target, tgtd, backing):
    export = target.create_export("vol-m", backing())
    live = tgtd.targets.pop(export.tid)
    tgtd.targets[99] = live  # e.g. tgt-admin --update ALL from the stanzas
    target.ensure_exports()
    assert target.store.load("vol-m").tid == 99
    assert list(tgtd.targets) == [99]


def test_ensure_exports_reports_failures_after_trying_all(target, tgtd, backing):
    for i in range(3):
        target.create_export(f"vol-q{i}", backing(f"q{i}.img"))
    tgtd.restart()
    tgtd.fail[(Mode.DEVICE, Op.NEW)] = [Err.NOMEM]
    with pytest.raises(exception.TargetError, match="1 of 3 exports failed"):
        target.ensure_exports()
    assert len(tgtd.targets) == 2


def test_remove_export_cleans_everything_without_a_listing(target, tgtd, dirs, backing):
    export = target.create_export("vol-d", backing())
    tgtd.add_target(50, "iqn.other:stays")
    tgtd.requests.clear()
    target.remove_export("vol-d")
    assert list(tgtd.targets) == [50] and tgtd.accounts == {}
    assert [p.name for p in dirs[0].iterdir()] == [".lock"]
    assert target.store.load("vol-d") is None
    assert tgtd.count(Mode.TARGET, Op.SHOW) == 0  # the tid was proven by the account
    assert tgtd.count(Mode.TARGET, Op.SHOW, export.tid) == 1  # and checked gone
    assert tgtd.count(Mode.ACCOUNT, Op.UNBIND, export.tid) == 0  # never left without CHAP


def test_remove_with_stale_tid_spares_the_new_owner(target, tgtd, backing):
    export = target.create_export("vol-s", backing())
    tgtd.restart()
    tgtd.add_target(export.tid, "iqn.other:new-owner")
    tgtd.add_target(export.tid + 5, export.iqn)
    target.remove_export("vol-s")
    assert [t["iqn"] for t in tgtd.targets.values()] == ["iqn.other:new-owner"]


def test_remove_with_stale_tid_leaves_a_foreign_target_as_it_was(target, tgtd, backing):
    export = target.create_export("vol-f2", backing())
    live = tgtd.targets.pop(export.tid)
    tgtd.targets[export.tid + 3] = live  # rebuilt elsewhere; the account survived
    tgtd.add_target(export.tid, "iqn.other:took-the-tid")
    target.remove_export("vol-f2")
    assert list(tgtd.targets) == [export.tid]
    assert tgtd.targets[export.tid]["accounts"] == [] and tgtd.accounts == {}


def test_remove_tolerates_a_target_already_gone(target, tgtd, dirs, backing):
    target.create_export("vol-g", backing())
    tgtd.restart()
    target.remove_export("vol-g")
    assert target.store.all() == [] and [p.name for p in dirs[0].iterdir()] == [".lock"]


def test_remove_retries_while_tgtd_says_still_active(target, tgtd, backing, monkeypatch):
    monkeypatch.setattr(tgt.time, "sleep", lambda s: None)
    export = target.create_export("vol-b", backing())
    tgtd.fail[(Mode.TARGET, Op.DELETE)] = [Err.TARGET_ACTIVE, Err.TARGET_ACTIVE]
    target.remove_export("vol-b")
    assert tgtd.targets == {}
    assert tgtd.count(Mode.TARGET, Op.DELETE, export.tid) == 3


def test_remove_gives_up_on_a_target_that_stays(target, tgtd, backing, monkeypatch):
    monkeypatch.setattr(tgt.time, "sleep", lambda s: None)
    target.create_export("vol-k", backing())
    tgtd.fail[(Mode.TARGET, Op.DELETE)] = [Err.TARGET_ACTIVE] * tgt.DELETE_ATTEMPTS
    with pytest.raises(exception.TargetError, match="still has it"):
        target.remove_export("vol-k")
    assert target.store.load("vol-k") is not None  # kept, so remove can be retried


def test_unusable_volumes_dir_is_a_target_error(tgtd, config_fixture, tmp_path, backing):
    (tmp_path / "plain-file").write_text("")
    config_fixture.config(group="target", volumes_dir=str(tmp_path / "plain-file" / "vol"),
                          exports_dir=str(tmp_path / "exports"),
                          backing_roots=[str(tmp_path)])
    target = tgt.TgtAdm(CONF.target, socket_path=tgtd.path)
    with pytest.raises(exception.TargetError, match="Not a directory"):
        target.create_export("vol-nd", backing())
    assert tgtd.requests == []


def test_tgtd_down_is_a_target_error(make_target, dirs, backing):
    target = tgt.TgtAdm(CONF.target, socket_path="/nonexistent/socket.0")
    with pytest.raises(exception.TargetError, match="tgtd is not running"):
        target.create_export("vol-down", backing())
    assert [p.name for p in dirs[0].iterdir()] == [".lock"]
