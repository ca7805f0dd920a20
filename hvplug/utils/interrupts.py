"""SIGINT and SIGTERM as an exception, held back while a rollback runs.

The ``hvplug`` command installs :func:`install`: either signal then raises
:class:`Interrupted` in the main thread, so an attach under way unwinds
through its rollback.  Three things bound that:

- inside :func:`deferred` (a rollback, a detach) the signal is remembered
  and raised when the block ends, so the undo itself always completes;
- after :func:`commit` (the operation reached its end: the disk is in the
  domain) a signal no longer undoes anything: it is remembered, the command
  reports its result as usual, and :func:`late_signal` tells it one came;
- :func:`ignore` at the very end of the command lets the process finish
  and exit with the code it chose.

Signals are only ever delivered to the main thread, so all of this is about
the main thread; calls from other threads change nothing.
"""

import contextlib
import signal
import threading

_state = threading.local()
_pending: list[str] = []
_committed = threading.Event()
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signal_name`` says which."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


def _depth() -> int:
    return getattr(_state, "depth", 0)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handler(signum, _frame) -> None:
    name = signal.Signals(signum).name
    if _depth() or _committed.is_set():
        _pending.append(name)
        return
    raise Interrupted(name)


def install() -> dict:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` (main thread only);
    the handlers they had, for :func:`restore`."""
    _pending.clear()
    _committed.clear()
    return {signum: signal.signal(signum, _handler) for signum in _SIGNALS}


def restore(previous: dict) -> None:
    """Put back the handlers :func:`install` replaced (an in-process caller)."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def begin() -> None:
    """An operation starts in the main thread: signals interrupt it again
    (a long-lived caller's earlier :func:`commit` no longer applies)."""
    if _main_thread():
        _committed.clear()
        _pending.clear()


def commit() -> None:
    """The main thread's operation is done; a later signal must not undo it
    (until the next :func:`begin`)."""
    if _main_thread():
        _committed.set()


def held() -> str | None:
    """The signal :func:`deferred` is holding back for the operation under
    way, if one came (any thread may ask: a watcher can then stop a long
    call the main thread is in, such as a migration)."""
    return _pending[0] if _pending and not _committed.is_set() else None


def late_signal() -> str | None:
    """The signal that arrived after :func:`commit`, if one did."""
    return _pending[0] if _committed.is_set() and _pending else None


def ignore() -> None:
    """From now on SIGINT and SIGTERM do nothing: the process is ending."""
    if _main_thread():
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def deferred():
    """Hold back SIGINT/SIGTERM until the block ends, then raise the first,
    unless the operation was committed meanwhile or the block raised (its
    own error goes on; the signal is dropped, not kept for a later block)."""
    _state.depth = _depth() + 1
    failed = True
    try:
        yield
        failed = False
    finally:
        _state.depth -= 1
        if not _depth() and _main_thread() and not _committed.is_set():
            name = _pending[0] if _pending else None
            _pending.clear()
            if name and not failed:
                raise Interrupted(name)
