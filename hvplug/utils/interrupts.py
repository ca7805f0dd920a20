"""SIGINT and SIGTERM as an exception, held back while a rollback runs.

The ``hvplug`` command installs :func:`install`: either signal then raises
:class:`Interrupted` in the main thread, so an attach under way unwinds
through its rollback.  Inside :func:`deferred` (a rollback) the signal is
remembered and raised when the block ends, so the undo itself always
completes.
"""

import contextlib
import signal
import threading

_state = threading.local()
_pending: list[str] = []


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signal_name`` says which."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


def _depth() -> int:
    return getattr(_state, "depth", 0)


def _handler(signum, _frame) -> None:
    name = signal.Signals(signum).name
    if _depth():
        _pending.append(name)
        return
    raise Interrupted(name)


def install() -> None:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` (main thread only)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handler)


@contextlib.contextmanager
def deferred():
    """Hold back SIGINT/SIGTERM until the block ends, then raise the first."""
    _state.depth = _depth() + 1
    try:
        yield
    finally:
        _state.depth -= 1
    if not _depth() and _pending and threading.current_thread() is threading.main_thread():
        name = _pending[0]
        _pending.clear()
        raise Interrupted(name)
