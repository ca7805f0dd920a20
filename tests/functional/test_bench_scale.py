"""tools/bench/scale.py runs end to end on a small host and leaks nothing.

Its numbers are not checked here (tests never judge wall-clock time); its
own exit code is 1 on any failed operation or leak (disks, secrets, tgtd
sessions), and that is what is checked.
"""

import json
import subprocess
import sys
from pathlib import Path

from tests import stack

REPO = Path(__file__).resolve().parents[2]


def test_scale_benchmark_small_run_has_no_failures_and_no_leaks():
    stack.require_libvirtd()
    stack.require_tgtd()
    done = subprocess.run(
        [sys.executable, str(REPO / "tools/bench/scale.py"), "--guests", "2", "--volumes", "3",
         "--parallel", "2", "--cycles", "2", "--json"],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    for side in ("raw", "api", "cli"):
        (run,) = summary["sides"][side]
        assert run["failures"] == 0
        assert run["leaks"] == {"disks": 0, "secrets": 0, "sessions": 0}
        assert run["attach"]["ops"] == run["detach"]["ops"] == 6
    assert set(summary["cycle_ms"]) == {"1_guest", "2_guests", "ratio"}
