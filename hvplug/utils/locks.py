"""Host-wide locks: one ``flock`` file per guarded thing, with bounded waits.

hvplug is never alone on a host: an orchestrator runs several hvplug
processes at once, and one process may run many operations in threads.  A
lock is a file in ``[locks] lock_path``:

- ``domain-<uuid>`` guards a domain's device names, attach and detach;
- ``secret-<hash of usage>`` guards defining a secret, counting its users
  and deleting it.

Order: a domain lock before any secret lock, and secret locks in sorted
order, so two operations never wait on each other in a circle.  The holder
writes what it is doing into the file, so a wait that runs out of time can
say who holds the lock.  flock is released by the kernel when a process
dies, even by SIGKILL, so a killed hvplug never leaves a lock behind.

We do not use oslo.concurrency's external locks here: their waits cannot
name the holder, and a named, bounded wait is what an operator needs when
an orchestrator's call times out.

>>> with domain_lock("6f1c...", "attach volume 42"):
...     pass
"""

import contextlib
import fcntl
import functools
import importlib
import os
import stat
import threading
import time
from pathlib import Path

from hvplug import exception
from hvplug.conf import CONF

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
_FIRST_POLL = 0.001
_MAX_POLL = 0.05


def _thread_lock(path: Path) -> threading.Lock:
    # abspath, not resolve(): no system calls, and every caller builds its
    # lock paths the same way.
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(os.path.abspath(path), threading.Lock())


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except IsADirectoryError:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def holder(path: Path) -> str:
    """What the holder of lock file ``path`` wrote: pid and operation."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        note = path.read_text().strip() if path.is_file() else ""
        if note:
            return note
    return "another process (it wrote no note)"


def _timed_out(path: Path, timeout: float | None) -> exception.LockTimeout:
    return exception.LockTimeout(name=path.name, timeout=timeout, holder=holder(path))


def _flock(fd: int, path: Path, deadline: float | None, timeout: float) -> None:
    delay = _FIRST_POLL
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
            return
        except BlockingIOError:
            assert deadline is not None  # LOCK_NB only with a deadline
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(path, timeout) from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, _MAX_POLL)


def _write_note(fd: int, operation: str) -> None:
    note = f"pid {os.getpid()}: {operation} (since {time.strftime('%H:%M:%S')})\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, note.encode(), 0)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def _take(path: Path, deadline, timeout, remove: bool) -> int:
    """An fd of ``path`` with the flock held; with ``remove``, of the file
    ``path`` still names (a holder removes it as it lets go, so a waiter
    may have locked a file no longer there, and opens the path again)."""
    while True:
        fd = _open(path)
        try:
            _flock(fd, path, deadline, timeout)
        except BaseException:
            os.close(fd)
            raise
        if not remove or _same_file(fd, path):
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold(path: str | os.PathLike, operation: str = "", timeout: float | None = None,
         remove: bool = False):
    """Hold lock file ``path`` against other threads and processes.

    ``timeout`` None waits for ever; otherwise LockTimeout names the holder.
    A thread lock per path serialises this process (flock alone would not:
    it is per open file description).  An existing directory is locked
    itself, and gets no note.  With ``remove``, the file is deleted as the
    lock is let go (while still held), so lock files do not pile up.
    """
    path = Path(path)
    deadline = None if timeout is None else time.monotonic() + timeout
    thread_lock = _thread_lock(path)
    if not thread_lock.acquire(timeout=-1 if timeout is None else timeout):
        raise _timed_out(path, timeout)
    try:
        fd = _take(path, deadline, timeout, remove)
        try:
            is_file = stat.S_ISREG(os.fstat(fd).st_mode)
            if is_file and operation:
                _write_note(fd, operation)
            try:
                yield
            finally:
                if is_file and remove:
                    path.unlink(missing_ok=True)
                elif is_file and operation:
                    os.ftruncate(fd, 0)  # before close: the next holder's note stays
        finally:
            os.close(fd)  # releases the flock
    finally:
        thread_lock.release()


_MADE_DIRS: set[str] = set()


def lock_dir() -> Path:
    """``[locks] lock_path``, created (mode 0700) the first time it is used."""
    path = Path(CONF.locks.lock_path)
    if str(path) not in _MADE_DIRS:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise exception.ConfigFileError(
                reason=f"[locks] lock_path {path}: cannot create it ({exc.strerror or exc}); "
                "set it to a directory this user can create and write") from None
        _MADE_DIRS.add(str(path))
    return path


def named(name: str, operation: str):
    """The host-wide lock ``name`` in ``[locks] lock_path``, bounded wait;
    its file exists only while someone holds or waits for it."""
    return hold(lock_dir() / name, operation, CONF.locks.lock_timeout, remove=True)


def domain_lock_name(domain_uuid: str) -> str:
    return f"domain-{domain_uuid}"


@functools.cache
def _sha256():
    """The SHA-256 constructor: CPython's own module's (``_sha2`` from 3.12,
    ``_sha256`` before) where it is built, else hashlib's.  Importing hashlib
    loads OpenSSL's libcrypto, ~3 ms of the start-up of every command that
    takes a secret's lock; both give the same digest
    (tests/unit/utils/test_locks.py)."""
    for module in ("_sha2", "_sha256"):
        with contextlib.suppress(ImportError, AttributeError):
            return importlib.import_module(module).sha256
    import hashlib

    return hashlib.sha256


def secret_lock_name(usage_type: str, usage_id: str) -> str:
    digest = _sha256()(f"{usage_type}\0{usage_id}".encode()).hexdigest()[:32]
    return f"secret-{digest}"


def domain_lock(domain_uuid: str, operation: str):
    return named(domain_lock_name(domain_uuid), operation)


def sweep() -> int:
    """Remove the lock files nobody holds; how many.

    A process killed (SIGKILL) while holding a lock cannot remove its file.
    Such a file harms nothing (the next holder takes it over and removes
    it), but ``hvplug reconcile`` clears them.  Each is taken without
    waiting and removed by the same protocol as any release, so a file
    someone holds or waits for is left alone.
    """
    removed = 0
    for path in sorted(lock_dir().glob("*-*")):
        if not path.name.startswith(("domain-", "secret-")) or not path.is_file():
            continue
        try:
            with hold(path, timeout=0, remove=True):
                pass
        except exception.LockTimeout:
            continue  # held right now
        removed += 1
    return removed


@contextlib.contextmanager
def all_of(names, operation: str):
    """Hold every lock in ``names``, taken in sorted order (no circular waits)."""
    with contextlib.ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(named(name, operation))
        yield
