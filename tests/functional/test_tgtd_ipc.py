"""hvplug.target.tgtd_ipc against the real tgtd, checked with the real tgtadm.

Other tests share this tgtd: every name here is unique (uuid4), tids are
found free and retried if taken, and only what a test made is removed.
"""

import contextlib
import logging
import os
import random
import re
import subprocess
import threading
import uuid

import pytest

from hvplug.target import tgtd_ipc
from hvplug.target.tgtd_ipc import Err
from tests import stack

LUN_BYTES = 16 << 20
INITIATOR = "iqn.1993-08.org.debian:01:hvplug-test"


def tgtadm(*args: str) -> str:
    """Run the real tgtadm (never with a password) and return its output."""
    result = subprocess.run(["tgtadm", "--lld", "iscsi", *args],
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise AssertionError(f"tgtadm {' '.join(args)}: {result.stderr}")
    return result.stdout


def tgtadm_target(tid: int) -> str:
    """One target's block of `tgtadm --mode target --op show`."""
    blocks = re.split(r"(?m)^(?=Target \d+: )", tgtadm("--mode", "target", "--op", "show"))
    found = [b for b in blocks if b.startswith(f"Target {tid}: ")]
    return found[0] if found else ""


def unique(kind: str) -> str:
    return f"hv{kind}{uuid.uuid4().hex[:12]}"


def iqn() -> str:
    return f"iqn.2024-01.org.hvplug.test:{uuid.uuid4()}"


@pytest.fixture
def ipc():
    stack.require_tgtd()
    return tgtd_ipc.TgtdIPC()


@pytest.fixture
def undo(ipc):
    """Cleanups to run at the end, last first, even when the test failed."""
    steps = []
    yield lambda fn, *args: steps.append((fn, args))
    for fn, args in reversed(steps):
        with contextlib.suppress(tgtd_ipc.TgtdError):
            fn(*args)


@pytest.fixture
def backing(tmp_path):
    """Factory of sparse backing files."""
    def make(name: str = "lun.img") -> str:
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(LUN_BYTES)
        return str(path)
    return make


def delete_own_target(ipc, tid: int, name: str) -> None:
    """Delete target ``tid`` if it is still ours (the tid may be reused)."""
    target = ipc.list_targets().get(tid)
    if target and target.iqn == name:
        ipc.delete_target(tid)


def new_target(ipc, undo) -> tuple[int, str]:
    name = iqn()
    tid = ipc.new_target(None, name, start=random.randint(900, 9000))
    undo(delete_own_target, ipc, tid, name)
    return tid, name


def new_account(ipc, undo) -> str:
    user = unique("u")
    ipc.new_account(user, unique("pw"))
    undo(ipc.delete_account, user)
    return user


def normalized(block: str, tid: int, name: str, path: str) -> str:
    """A target's show block without what differs by tid, name and file."""
    block = block.replace(f"Target {tid}: {name}", "Target TID: IQN")
    block = block.replace(path, "PATH")
    return re.sub(r"(?m)^\s+SCSI (ID|SN): .*\n", "", block)


def test_export_is_what_tgtadm_would_make(ipc, undo, backing):
    tid, name = new_target(ipc, undo)
    path = backing("ipc.img")
    ipc.new_lun(tid, 1, path)
    user, out_user = new_account(ipc, undo), new_account(ipc, undo)
    ipc.bind_account(tid, user)
    ipc.bind_account(tid, out_user, outgoing=True)
    ipc.bind_initiator(tid, address="ALL")
    ipc.bind_initiator(tid, name=INITIATOR)

    # The same export, made by tgtadm (its account commands carry no password).
    twin_name, twin_path = iqn(), backing("cli.img")
    for _ in range(20):
        twin = ipc.free_tid(random.randint(900, 9000))
        try:
            tgtadm("--mode", "target", "--op", "new", "--tid", str(twin),
                   "--targetname", twin_name)
        except AssertionError as exc:
            if "already exists" not in str(exc):
                raise
            continue  # another test took that tid meanwhile
        undo(delete_own_target, ipc, twin, twin_name)
        break
    else:
        pytest.fail("found no free tid for the tgtadm-made twin")
    tgtadm("--mode", "logicalunit", "--op", "new", "--tid", str(twin),
           "--lun", "1", "--backing-store", twin_path, "--bstype", "rdwr")
    tgtadm("--mode", "account", "--op", "bind", "--tid", str(twin), "--user", user)
    tgtadm("--mode", "account", "--op", "bind", "--tid", str(twin),
           "--user", out_user, "--outgoing")
    tgtadm("--mode", "target", "--op", "bind", "--tid", str(twin),
           "--initiator-address", "ALL")
    tgtadm("--mode", "target", "--op", "bind", "--tid", str(twin),
           "--initiator-name", INITIATOR)

    mine = tgtadm_target(tid)
    assert f"Target {tid}: {name}\n" in mine
    assert f"Backing store path: {path}\n" in mine
    assert f"        {user}\n        {out_user} (outgoing)\n" in mine
    assert f"        ALL\n        {INITIATOR}\n" in mine
    assert normalized(mine, tid, name, path) == normalized(
        tgtadm_target(twin), twin, twin_name, twin_path)
    assert user in tgtadm("--mode", "account", "--op", "show").split()

    info = ipc.list_targets()[tid]
    assert (info.iqn, info.accounts, info.outgoing_account) == (name, [user], out_user)
    assert info.acls == ["ALL", INITIATOR]
    lun = info.luns[1]
    assert (lun.backing_store, lun.bstype, lun.block_size) == (path, "rdwr", 512)
    assert abs(lun.size_mb - LUN_BYTES / 10**6) < 1  # tgtd prints decimal MB
    assert ipc.show_targets() == tgtadm("--mode", "target", "--op", "show")


def test_show_target_params(ipc, undo):
    tid, _ = new_target(ipc, undo)
    shown = tgtadm("--mode", "target", "--op", "show", "--tid", str(tid))
    assert "MaxRecvDataSegmentLength=" in shown
    assert ipc.show_target_params(tid) == shown


def test_refusals_carry_tgtadms_error(ipc, undo, backing):
    tid, name = new_target(ipc, undo)
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.new_target(tid, name)
    assert info.value.code == Err.TARGET_EXIST == 9
    assert "this target already exists (tgtadm error 9)" in str(info.value)

    ipc.new_lun(tid, 1, backing())
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.new_lun(tid, 1, backing())
    assert info.value.code == Err.LUN_EXIST
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.delete_lun(tid, 7)
    assert info.value.code == Err.NO_LUN
    ipc.bind_initiator(tid, address="ALL")
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.bind_initiator(tid, address="ALL")
    assert info.value.code == Err.ACL_EXIST
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.bind_account(tid, unique("nobody"))
    assert info.value.code == Err.NO_USER
    user = new_account(ipc, undo)
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.new_account(user, "another-password")
    assert info.value.code == Err.USER_EXIST
    assert "another-password" not in str(info.value)
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        tgtd_ipc.TgtdIPC(lld="nosuchlld").show_targets()
    assert info.value.code == Err.NO_DRIVER


def test_delete_removes_everything(ipc, undo, backing):
    tid, _ = new_target(ipc, undo)
    ipc.new_lun(tid, 1, backing())
    user = new_account(ipc, undo)
    ipc.bind_account(tid, user)
    ipc.bind_initiator(tid, address="127.0.0.1")

    ipc.unbind_account(tid, user)
    ipc.delete_lun(tid, 1)
    block = tgtadm_target(tid)
    assert user not in block
    assert "LUN: 1" not in block
    ipc.delete_target(tid)
    ipc.delete_account(user)
    assert tgtadm_target(tid) == ""
    assert user not in tgtadm("--mode", "account", "--op", "show").split()
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.delete_target(tid)
    assert info.value.code == Err.NO_TARGET


def _forbidden(*args, **kwargs):
    raise AssertionError("the tgtd client must not start a process")


def _cmdlines_with(secret: bytes) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if secret in f.read():
                found.append(pid)
    return found


def test_account_password_never_in_a_process_argv(ipc, undo, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system",
                 "execv", "execve", "execvp", "spawnv", "popen"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _forbidden)
    monkeypatch.setattr(subprocess, "Popen", _forbidden)
    user, password = unique("u"), f"hvplug-secret-{uuid.uuid4()}"

    seen, stop = [], threading.Event()

    def watch():  # look at every argv on the machine while we work
        while not stop.is_set():
            seen.extend(_cmdlines_with(password.encode()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        undo(ipc.delete_account, user)
        for _ in range(50):
            with contextlib.suppress(tgtd_ipc.TgtdError):
                ipc.delete_account(user)
            ipc.new_account(user, password)
        assert user in ipc.list_accounts()
    finally:
        stop.set()
        watcher.join()
    assert seen == []
    for record in caplog.records:
        assert password not in record.getMessage()
