"""TgtAdm against the real tgtd: exports QEMU reads, the iSER error, restarts.

Two tgtds are used.  The shared one (``/var/run/tgtd/socket.0``, portal
127.0.0.1:3260) serves other test runs too: every volume id here carries a
unique hex tag and only what a test made is removed.  The restart tests
start a private tgtd of their own (``tgtd -f -C <control port> --iscsi
portal=127.0.0.1:<port>``), kill it with SIGKILL and start it again; the
shared one is never touched by them.

QEMU reaches the targets through its own iSCSI client (libiscsi) with the
CHAP password in a 0600 file passed as a secret object, never in argv.
"""

import contextlib
import ctypes
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from hvplug import exception
from hvplug.conf import CONF
from hvplug.target import tgtd_ipc
from hvplug.target.tgt import TgtAdm
from hvplug.target.tgtd_ipc import TgtdIPC
from tests import stack

SIZE = 64 << 20
INITIATOR = "iqn.2024-01.org.hvplug.test:tgt-target"
SOCKET_DIR = Path("/var/run/tgtd")


# -- QEMU and libiscsi as initiators -------------------------------------------

def image_opts(data: dict) -> str:
    opts = (f"driver=iscsi,transport=tcp,portal={data['target_portal']},"
            f"target={data['target_iqn']},lun={data['target_lun']},"
            f"initiator-name={INITIATOR}")
    if data.get("auth_method") == "CHAP":
        opts += f",user={data['auth_username']},password-secret=chap"
    return opts


def secret_file(directory: Path, password: str) -> Path:
    path = directory / f"chap-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    return path


def qemu_argv(command: list[str], data: dict, secret: Path) -> list[str]:
    """``command`` (qemu-img SUBCOMMAND ... or qemu-io -c ...) on the LUN."""
    return [*command, "--object", f"secret,id=chap,file={secret}",
            "--image-opts", image_opts(data)]


def qemu(command: list[str], data: dict, secrets_dir: Path,
         password: str | None = None) -> subprocess.CompletedProcess:
    """Run ``command`` on the LUN; the password goes in a 0600 file."""
    secret = secret_file(secrets_dir, password or data.get("auth_password") or "")
    try:
        return subprocess.run(qemu_argv(command, data, secret), capture_output=True,
                              text=True, timeout=60, check=False)
    finally:
        secret.unlink()


def write_cache_enabled(data: dict) -> bool:
    """The WCE bit of LUN 1's caching mode page, read with MODE SENSE(6).

    Through libiscsi (QEMU's iSCSI library) by ctypes; the CHAP password
    stays in this process.  libiscsi 1.19 has no accessor for a task's data
    in: ``struct scsi_task`` keeps ``datain.size``/``datain.data`` at byte
    64/72 on x86_64, which the check of the mode data length below confirms.
    """
    lib = ctypes.CDLL("libiscsi.so.7")
    lib.iscsi_create_context.restype = ctypes.c_void_p
    lib.iscsi_modesense6_sync.restype = ctypes.c_void_p
    lib.iscsi_get_error.restype = ctypes.c_char_p
    ctx = ctypes.c_void_p(lib.iscsi_create_context(INITIATOR.encode()))
    try:
        lib.iscsi_set_targetname(ctx, data["target_iqn"].encode())
        lib.iscsi_set_session_type(ctx, 2)  # ISCSI_SESSION_NORMAL
        lib.iscsi_set_initiator_username_pwd(
            ctx, data["auth_username"].encode(), data["auth_password"].encode())
        assert lib.iscsi_full_connect_sync(ctx, data["target_portal"].encode(), 1) == 0, \
            lib.iscsi_get_error(ctx)
        task = lib.iscsi_modesense6_sync(ctx, 1, 1, 0, 0x08, 0, 255)  # DBD, page 8
        assert task, lib.iscsi_get_error(ctx)
        try:
            assert ctypes.c_int.from_address(task).value == 0  # SCSI status GOOD
            size = ctypes.c_int.from_address(task + 64).value
            page = ctypes.string_at(ctypes.c_void_p.from_address(task + 72).value, size)
        finally:
            lib.scsi_free_scsi_task(ctypes.c_void_p(task))
        lib.iscsi_logout_sync(ctx)
    finally:
        lib.iscsi_destroy_context(ctx)
    assert page[0] + 1 == size and page[4] == 0x08, page.hex()  # header, then page 8
    return bool(page[4 + 2] & 0x04)


# -- tgtd's side ----------------------------------------------------------------

def live_target(socket_path: str, iqn: str):
    found = [t for t in TgtdIPC(socket_path).list_targets().values() if t.iqn == iqn]
    return found[0] if found else None


def normalized_block(socket_path: str, iqn: str) -> str:
    """tgtd's show block of ``iqn`` without what differs between two creations."""
    text = TgtdIPC(socket_path).show_targets()
    block = re.search(rf"(?ms)^Target \d+: {re.escape(iqn)}\n.*?(?=^Target |\Z)", text)[0]
    block = re.sub(r"^Target \d+:", "Target TID:", block)
    return re.sub(r"(?m)^\s+SCSI (ID|SN): .*\n", "", block)


class PrivateTgtd:
    """A tgtd of this test alone, on its own control port and portal."""

    def __init__(self, log_dir: Path):
        self.control_port = self._free_control_port()
        self.portal_port = _free_tcp_port()
        self.socket_path = str(SOCKET_DIR / f"socket.{self.control_port}")
        self.log = log_dir / "tgtd.log"
        self.proc = None

    @staticmethod
    def _free_control_port() -> int:
        while True:
            port = random.randint(1000, 32767)  # tgtd takes at most 32767
            if not (SOCKET_DIR / f"socket.{port}").exists():
                return port

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["tgtd", "-f", "-C", str(self.control_port),
                 "--iscsi", f"portal=127.0.0.1:{self.portal_port}"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(tgtd_ipc.TgtdUnavailable, tgtd_ipc.TgtdIPCError,
                                     OSError):
                TgtdIPC(self.socket_path, timeout=1).show_targets()
                socket.create_connection(("127.0.0.1", self.portal_port), 1).close()
                return
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"tgtd did not come up: {self.log.read_text()}"
            time.sleep(0.05)

    def kill9(self) -> None:
        self.proc.kill()  # SIGKILL: every target is gone from memory
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill9()
        for name in (self.socket_path, self.socket_path + ".lock"):
            Path(name).unlink(missing_ok=True)


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- fixtures ------------------------------------------------------------------

@pytest.fixture
def dirs(tmp_path, config_fixture):
    volumes, exports = tmp_path / "volumes", tmp_path / "exports"
    config_fixture.config(group="target", volumes_dir=str(volumes),
                          exports_dir=str(exports), iscsi_ip_address="127.0.0.1",
                          backing_roots=[str(tmp_path)])
    return volumes, exports


@pytest.fixture
def backing(tmp_path):
    def make(size: int = SIZE) -> str:
        path = tmp_path / f"volume-{uuid.uuid4().hex[:8]}.img"
        with open(path, "wb") as f:
            f.truncate(size)
        return str(path)
    return make


def tagged_id() -> str:
    return f"hvplug-test-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def cleaned_up(target: TgtAdm):
    """Remove every export ``target`` recorded, even when the test failed.

    What ``remove_export`` could not remove goes by hand: only targets and
    accounts of those records, never anybody else's.
    """
    try:
        yield target
    finally:
        exports = target.store.all()
        for export in exports:
            with contextlib.suppress(exception.HvplugError):
                target.remove_export(export.volume_id)
        ipc = TgtdIPC(target.socket_path)
        with contextlib.suppress(exception.HvplugError):
            live = {t.iqn: t.tid for t in ipc.list_targets().values()}
            for export in exports:
                with contextlib.suppress(exception.HvplugError):
                    if export.iqn in live:
                        ipc.delete_target(live[export.iqn], force=True)
                    ipc.delete_account(export.auth_username)


@pytest.fixture
def shared(dirs):
    stack.require_tgtd()
    with cleaned_up(TgtAdm(CONF.target)) as target:
        yield target


@pytest.fixture
def daemon(tmp_path, config_fixture):
    stack.require_tgtd()  # root, tgt installed
    tgtd = PrivateTgtd(tmp_path)
    try:
        tgtd.start()
        config_fixture.config(group="target", iscsi_port=tgtd.portal_port)
        yield tgtd
    finally:
        tgtd.close()


@pytest.fixture
def private(daemon, dirs):
    with cleaned_up(TgtAdm(CONF.target, socket_path=daemon.socket_path)) as target:
        yield target


# -- the shared tgtd ---------------------------------------------------------------

def test_chap_export_is_served_and_qemu_reads_it(shared, dirs, backing, tmp_path):
    path = backing()
    volume_id = tagged_id()
    export = shared.create_export(volume_id, path)

    info = live_target(shared.socket_path, export.iqn)
    assert info.tid == export.tid
    lun = info.luns[1]
    assert (lun.backing_store, lun.bstype) == (path, "rdwr")
    assert abs(lun.size_mb - SIZE / 10**6) < 1  # tgtd prints decimal MB
    assert info.accounts == [export.auth_username] and info.acls == ["ALL"]
    assert export.auth_username in TgtdIPC().list_accounts()
    stanza = dirs[0] / f"volume-{volume_id}.conf"
    assert stanza.read_text() == shared.stanza(export)
    assert stanza.stat().st_mode & 0o777 == 0o600

    conn = shared.initialize_connection(volume_id, {"initiator": INITIATOR})
    assert conn == {"driver_volume_type": "iscsi", "data": {
        "target_discovered": False, "target_portal": "127.0.0.1:3260",
        "target_iqn": export.iqn, "target_lun": 1, "volume_id": volume_id,
        "encrypted": False, "access_mode": "rw", "auth_method": "CHAP",
        "auth_username": export.auth_username, "auth_password": export.auth_password},
        "serial": volume_id}
    data = conn["data"]
    result = qemu(["qemu-img", "info", "--output=json"], data, tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"virtual-size": 67108864' in result.stdout
    assert export.auth_password not in result.stdout + result.stderr
    result = qemu(["qemu-io", "-c", "write -P 0x5a 1M 64k"], data, tmp_path)
    assert result.returncode == 0, result.stderr
    with open(path, "rb") as f:
        f.seek(1 << 20)
        assert f.read(65536) == b"\x5a" * 65536
    result = qemu(["qemu-img", "info"], data, tmp_path, password="wrong-password")
    assert result.returncode != 0 and "Authentication failure" in result.stderr

    shared.remove_export(volume_id)
    assert live_target(shared.socket_path, export.iqn) is None
    assert export.auth_username not in TgtdIPC().list_accounts()
    assert sorted(p.name for p in dirs[0].iterdir()) == [".lock"]
    assert shared.store.all() == []


def test_write_cache_live_is_what_the_stanza_says(shared, backing, config_fixture):
    on = shared.create_export(tagged_id(), backing())
    config_fixture.config(group="target", iscsi_write_cache=False)
    off = shared.create_export(tagged_id(), backing())
    for export, enabled in ((on, True), (off, False)):
        text = shared.stanza_path(export).read_text()
        assert f"write-cache {'on' if enabled else 'off'}\n" in text
        data = shared.initialize_connection(export.volume_id)["data"]
        assert write_cache_enabled(data) is enabled


def test_enable_iser_here_fails_clearly_and_leaves_nothing(dirs, backing):
    stack.require_tgtd()
    target = TgtAdm(CONF.target, iser=True)
    volume_id = tagged_id()
    with cleaned_up(target), pytest.raises(exception.IserUnavailable) as info:
        target.create_export(volume_id, backing())
    message = str(info.value)
    assert message.startswith("iSER/RDMA is unavailable on this target host: ")
    assert "can't find the driver" in message and "enable_iser off" in message
    assert "Traceback" not in message
    assert live_target(tgtd_ipc.DEFAULT_SOCKET, target.iqn(volume_id)) is None
    assert sorted(p.name for p in dirs[0].iterdir()) == [".lock"]
    assert target.store.all() == []


def test_concurrent_creates_get_their_own_targets(shared, backing):
    ids = [tagged_id() for _ in range(8)]
    paths = {volume_id: backing(8 << 20) for volume_id in ids}
    barrier, made, errors = threading.Barrier(len(ids)), {}, []

    def create(volume_id):
        barrier.wait()
        try:
            made[volume_id] = TgtAdm(CONF.target).create_export(volume_id, paths[volume_id])
        except exception.HvplugError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(v,)) for v in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len({e.tid for e in made.values()}) == len(ids)
    live = {t.iqn: t for t in TgtdIPC().list_targets().values()}
    for volume_id, export in made.items():
        assert live[export.iqn].tid == export.tid
        assert live[export.iqn].luns[1].backing_store == paths[volume_id]
        assert live[export.iqn].accounts == [export.auth_username]


def test_remove_forces_out_a_logged_in_initiator(shared, backing, tmp_path):
    volume_id = tagged_id()
    export = shared.create_export(volume_id, backing())
    data = shared.initialize_connection(volume_id)["data"]
    secret = secret_file(tmp_path, data["auth_password"])
    holder = subprocess.Popen(  # qemu-io keeps its session while it waits for commands
        qemu_argv(["qemu-io"], data, secret), stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not live_target(shared.socket_path, export.iqn).sessions:
            assert holder.poll() is None, "qemu-io could not open the LUN"
            assert time.monotonic() < deadline, "qemu-io never logged in"
            time.sleep(0.05)
        shared.remove_export(volume_id)
        assert live_target(shared.socket_path, export.iqn) is None
    finally:
        holder.kill()
        holder.wait(10)


# -- a private tgtd, restarted ------------------------------------------------------

def test_kill9_restart_then_ensure_exports_brings_all_back(private, daemon, dirs, backing,
                                                         tmp_path):
    exports = [private.create_export(tagged_id(), backing()) for _ in range(3)]
    for n, export in enumerate(exports):
        data = private.initialize_connection(export.volume_id)["data"]
        result = qemu(["qemu-io", "-c", f"write -P {0x41 + n} 0 128k"], data, tmp_path)
        assert result.returncode == 0, result.stderr

    daemon.kill9()
    daemon.start()
    ipc = TgtdIPC(private.socket_path)
    assert ipc.list_targets() == {} and ipc.list_accounts() == []

    # The operator's way back: the CLI, pointed at this tgtd and these records.
    conf = tmp_path / "restore.conf"
    conf.write_text(f"[target]\ntgtd_socket = {private.socket_path}\n"
                    f"volumes_dir = {dirs[0]}\nexports_dir = {dirs[1]}\n"
                    f"iscsi_port = {daemon.portal_port}\nbacking_roots = {tmp_path}\n")
    result = subprocess.run([sys.executable, "-m", "hvplug.cli.main", "--config-file",
                             str(conf), "target", "ensure-exports", "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    restored_ids = [row["volume_id"] for row in json.loads(result.stdout)["exports"]]
    assert sorted(restored_ids) == sorted(e.volume_id for e in exports)
    restored = private.ensure_exports()  # all there now: nothing re-created
    for n, export in enumerate(exports):
        info = live_target(private.socket_path, export.iqn)
        assert info.luns[1].backing_store == export.path
        assert info.accounts == [export.auth_username] and info.acls == ["ALL"]
        assert private.store.load(export.volume_id).tid == info.tid
        data = private.initialize_connection(export.volume_id)["data"]
        result = qemu(["qemu-io", "-c", f"read -P {0x41 + n} 0 128k"], data, tmp_path)
        assert result.returncode == 0 and "read 131072/131072" in result.stdout, \
            result.stdout + result.stderr
        result = qemu(["qemu-img", "info"], data, tmp_path, password="wrong")
        assert "Authentication failure" in result.stderr

    assert sorted(e.volume_id for e in restored) == sorted(restored_ids)
    for export in exports:
        private.remove_export(export.volume_id)
    assert ipc.list_targets() == {} and ipc.list_accounts() == []
    assert sorted(p.name for p in dirs[0].iterdir()) == [".lock"]
    assert private.store.all() == []


def test_stanzas_rebuild_the_same_targets_with_tgt_admin(private, daemon, dirs, backing,
                                                         config_fixture, tmp_path):
    on = private.create_export(tagged_id(), backing())
    config_fixture.config(group="target", iscsi_write_cache=False)
    off = private.create_export(tagged_id(), backing())
    exports = (on, off)
    made = {e.iqn: normalized_block(private.socket_path, e.iqn) for e in exports}
    caches = [write_cache_enabled(private.initialize_connection(e.volume_id)["data"])
              for e in exports]
    assert caches == [True, False]

    daemon.kill9()
    daemon.start()
    config = tmp_path / "tgtd.conf"  # what /etc/tgt/conf.d/hvplug.conf would hold
    config.write_text(f"include {dirs[0]}/*.conf\n")
    # tgt-admin passes the CHAP passwords to tgtadm in argv: its way, on a
    # private daemon here, with throwaway passwords.
    result = subprocess.run(
        ["tgt-admin", "-C", str(daemon.control_port), "--update", "ALL",
         "-c", str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    for export in exports:
        assert normalized_block(private.socket_path, export.iqn) == made[export.iqn]
    assert [write_cache_enabled(private.initialize_connection(e.volume_id)["data"])
            for e in exports] == caches
    private.ensure_exports()  # adopts what tgt-admin built
    live = TgtdIPC(private.socket_path).list_targets()
    assert len(live) == 2
    assert {private.store.load(e.volume_id).tid for e in exports} == set(live)


def test_enable_iser_on_private_tgtd_leaves_no_account(private, dirs, backing):
    target = TgtAdm(CONF.target, socket_path=private.socket_path, iser=True)
    with pytest.raises(exception.IserUnavailable):
        target.create_export(tagged_id(), backing())
    ipc = TgtdIPC(private.socket_path)
    assert ipc.list_targets() == {} and ipc.list_accounts() == []
    assert sorted(p.name for p in dirs[0].iterdir()) == [".lock"]
