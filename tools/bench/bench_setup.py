"""What every benchmark that drives the real stack checks and installs first.

>>> code = bench_setup.refuse_unless_ready("migrate", "tgtd, qemu:///system and tools/lab")
>>> if code: return code
>>> bench_setup.stop_on_signals()
"""

import os
import signal
import sys
from pathlib import Path

from hvplug.target.tgtd_ipc import TgtdIPC


def refuse_unless_ready(prog: str, needs: str) -> int | None:
    """2 (with the reason and the fix on stderr) when not root or tgtd is down."""
    if os.geteuid() != 0:
        print(f"{prog}: run it as root (prefix sudo if you are not root): {needs} need it",
              file=sys.stderr)
        return 2
    if not Path(TgtdIPC().socket_path).exists():
        print(f"{prog}: tgtd is not running; start the stack first: tools/stack start",
              file=sys.stderr)
        return 2
    return None


def _terminate(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the benchmark's clean-up runs."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
