"""Host-wide flock locks: threads and real processes contend, waits are bounded."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hvplug import exception
from hvplug.utils import locks

# A child process that holds ``path`` with ``operation`` until killed or its stdin closes.
HOLDER = textwrap.dedent("""
    import sys
    from hvplug.utils import locks
    with locks.hold(sys.argv[1], sys.argv[2], remove=sys.argv[3] == "remove"):
        print("held", flush=True)
        sys.stdin.read()
""")


@pytest.fixture
def holder_process():
    """``start(path, operation) -> Popen`` of a process that holds the lock."""
    started = []

    def start(path, operation="attach volume 42 to domain 'g'", remove=False):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), operation,
                                 "remove" if remove else "keep"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[3])
        started.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_note_names_holder_while_held_and_is_cleared_on_release(tmp_path):
    path = tmp_path / "domain-1"
    with locks.hold(path, "attach volume 7"):
        note = path.read_text()
        assert note.startswith(f"pid {os.getpid()}: attach volume 7 (since ")
        assert locks.holder(path) == note.strip()
    assert path.read_text() == ""
    assert locks.holder(path) == "another process (it wrote no note)"


def test_second_thread_times_out_naming_the_holder(tmp_path):
    path, held, release = tmp_path / "domain-2", threading.Event(), threading.Event()

    def hold():
        with locks.hold(path, "detach volume 9"):
            held.set()
            release.wait(5)
    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(5)
        with pytest.raises(exception.LockTimeout) as err, \
                locks.hold(path, "attach volume 10", timeout=0.1):
            pass
        assert f"pid {os.getpid()}: detach volume 9" in str(err.value)
        assert "domain-2" in str(err.value) and err.value.exit_code == 1
    finally:
        release.set()
        thread.join()


def test_threads_take_turns(tmp_path):
    path, order = tmp_path / "domain-3", []

    def work(name):
        with locks.hold(path, name, timeout=5):
            order.append(f"{name} in")
            time.sleep(0.02)
            order.append(f"{name} out")
    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(order) == 8
    assert all(order[i].split()[0] == order[i + 1].split()[0] for i in range(0, 8, 2))


def test_other_process_times_out_naming_pid_and_operation(tmp_path, holder_process):
    path = tmp_path / "secret-abc"
    proc = holder_process(path)
    with pytest.raises(exception.LockTimeout) as err, \
            locks.hold(path, "attach volume 43", timeout=0.1):
        pass
    message = str(err.value)
    assert f"pid {proc.pid}: attach volume 42 to domain 'g'" in message
    assert "Gave up after 0.1 s" in message and "secret-abc" in message


def test_wait_ends_when_the_other_process_releases(tmp_path, holder_process):
    path = tmp_path / "domain-4"
    proc = holder_process(path)
    threading.Timer(0.2, proc.stdin.close).start()  # the holder leaves its block
    with locks.hold(path, "attach volume 44", timeout=10):
        assert f"pid {os.getpid()}: attach volume 44" in path.read_text()
        assert proc.wait(5) == 0  # we got in because the holder left, not beside it


def test_a_waiter_follows_a_removed_lock_file_to_the_new_one(tmp_path, holder_process):
    """A holder with remove=True deletes the file as it lets go; the waiter,
    which had opened the old file, must lock the file the path names now,
    so a third process is kept out."""
    path = tmp_path / "domain-6"
    proc = holder_process(path, remove=True)
    threading.Timer(0.2, proc.stdin.close).start()
    with locks.hold(path, "the waiter", timeout=10, remove=True):
        assert proc.wait(5) == 0
        assert locks.holder(path).startswith(f"pid {os.getpid()}: the waiter")
        third = subprocess.run([sys.executable, "-c", TRY_ONCE, str(path)], check=False,
                               capture_output=True, text=True, timeout=30,
                               cwd=Path(__file__).resolve().parents[3])
        assert third.returncode != 0
        assert "LockTimeout" in third.stderr
        assert f"pid {os.getpid()}: the waiter" in third.stderr
    assert not path.exists()


TRY_ONCE = textwrap.dedent("""
    import sys
    from hvplug.utils import locks
    with locks.hold(sys.argv[1], "third", timeout=0.3, remove=True):
        pass
""")


def test_sigkilled_holder_releases_the_lock(tmp_path, holder_process):
    path = tmp_path / "domain-5"
    proc = holder_process(path)
    assert f"pid {proc.pid}:" in locks.holder(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    with locks.hold(path, "after the kill", timeout=5):  # LockTimeout if it stayed held
        assert "after the kill" in path.read_text()


def test_all_of_takes_each_lock_once_in_sorted_order(monkeypatch, lock_path):
    taken, real_named = [], locks.named

    def named(name, operation):
        taken.append(name)
        return real_named(name, operation)
    monkeypatch.setattr(locks, "named", named)
    with locks.all_of(["secret-b", "secret-a", "domain-z", "secret-a"], "bulk attach"):
        notes = {name: (lock_path / name).read_text() for name in taken}
    assert taken == ["domain-z", "secret-a", "secret-b"]
    assert all("bulk attach" in note for note in notes.values())
    assert not any((lock_path / name).exists() for name in taken)  # removed on release


def test_named_locks_live_in_lock_path(lock_path, config_fixture):
    config_fixture.config(group="locks", lock_timeout=0.05)
    with locks.domain_lock("6f1c-uuid", "attach"):
        assert (lock_path / "domain-6f1c-uuid").is_file()
        assert lock_path.stat().st_mode & 0o777 == 0o700
        with pytest.raises(exception.LockTimeout) as err:
            threading_result(lambda: locks.domain_lock("6f1c-uuid", "detach").__enter__())
    assert "Gave up after 0.05 s" in str(err.value)


def threading_result(func):
    """Run ``func`` in another thread (a second contender); re-raise what it raised."""
    outcome = {}

    def run():
        try:
            outcome["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            outcome["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_secret_lock_names_are_stable_and_distinct():
    one = locks.secret_lock_name("iscsi", "iqn.2010-10.org.openstack:volume-1/1")
    assert one == locks.secret_lock_name("iscsi", "iqn.2010-10.org.openstack:volume-1/1")
    assert one != locks.secret_lock_name("iscsi", "iqn.2010-10.org.openstack:volume-1/2")
    assert one != locks.secret_lock_name("ceph", "iqn.2010-10.org.openstack:volume-1/1")
    assert one.startswith("secret-") and "/" not in one and len(one) == len("secret-") + 32


def test_secret_lock_names_are_sha256_whichever_module_computes_it(monkeypatch):
    """The same names as hashlib's SHA-256 gave (other hvplug processes on
    the host, older ones included, must meet in the same files), with the
    builtin module and with hashlib as the fallback."""
    import hashlib

    usage = "iscsi\0iqn.2010-10.org.openstack:volume-1/1"
    expected = "secret-" + hashlib.sha256(usage.encode()).hexdigest()[:32]
    assert locks.secret_lock_name("iscsi", "iqn.2010-10.org.openstack:volume-1/1") == expected
    real_import = locks.importlib.import_module

    def no_builtin_sha(name, *args):
        if name in ("_sha2", "_sha256"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(locks.importlib, "import_module", no_builtin_sha)
    locks._sha256.cache_clear()
    try:
        assert locks.secret_lock_name("iscsi", "iqn.2010-10.org.openstack:volume-1/1") \
            == expected
        assert locks._sha256() is hashlib.sha256
    finally:
        locks._sha256.cache_clear()


def test_sweep_removes_the_files_of_killed_holders_and_spares_held_ones(lock_path,
                                                                        holder_process):
    with locks.hold(lock_path / "domain-left-by-a-kill", "attach"):
        pass  # a file without a holder, as a SIGKILL leaves it
    (lock_path / "domain-left-by-a-kill").write_text("pid 1: attach (since 10:00:00)\n")
    held = holder_process(lock_path / "secret-held")
    (lock_path / "not-a-lock.txt").write_text("someone else's file")
    try:
        assert locks.sweep() == 1
        assert not (lock_path / "domain-left-by-a-kill").exists()
        assert f"pid {held.pid}:" in locks.holder(lock_path / "secret-held")
        assert (lock_path / "not-a-lock.txt").read_text() == "someone else's file"
    finally:
        held.stdin.close()
        held.wait(5)


def test_a_lock_path_that_cannot_be_made_is_bad_input_naming_the_option(tmp_path,
                                                                        config_fixture):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config_fixture.config(group="locks", lock_path=str(blocker / "locks"))
    with pytest.raises(exception.ConfigFileError) as err:
        locks.lock_dir()
    assert err.value.exit_code == 2
    assert "[locks] lock_path" in err.value.message and str(blocker) in err.value.message
