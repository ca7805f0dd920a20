"""tools/bench/cli_startup.py runs end to end, ``--against`` included, and
leaves nothing behind: no guest, tgtd target or CHAP account, secret, work
directory or git worktree.

Its numbers are not judged here (tests never judge wall-clock time); that
each side ran and was reported is.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests import stack

REPO = Path(__file__).resolve().parents[2]


def _leftovers() -> dict:
    domains = subprocess.run(["virsh", "-q", "-c", "qemu:///system", "list", "--all",
                              "--name"], capture_output=True, text=True, check=True).stdout
    targets = subprocess.run(["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show"],
                             capture_output=True, text=True, check=True).stdout
    secrets = subprocess.run(["virsh", "-q", "-c", "qemu:///system", "secret-list"],
                             capture_output=True, text=True, check=True).stdout
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout
    return {
        "domains": sorted(d for d in domains.split() if d.startswith("hvplug-clibench-")),
        "targets": targets.count("volume-hvplug-clibench-"),
        "secrets": secrets.count("volume-hvplug-clibench-"),
        "worktrees": worktrees.count("hvplug-clibench-rev-"),
        "dirs": sorted(p.name for p in Path(tempfile.gettempdir()).glob("hvplug-clibench-*")),
    }


def test_cli_startup_benchmark_runs_both_comparisons_and_leaves_nothing():
    stack.require_libvirtd()
    stack.require_tgtd()
    before = _leftovers()
    done = subprocess.run(
        [sys.executable, str(REPO / "tools/bench/cli_startup.py"), "--runs", "1",
         "--against", "HEAD", "--json"],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["ratio_cli_virsh"] > 0 and summary["help_ms"] > 0
    assert set(summary["against"]["sides"]) == {"this tree", "HEAD"}
    for side in summary["against"]["sides"].values():
        assert side["round"] > 0 and side["cpu_per_process"] > 0
    assert _leftovers() == before
