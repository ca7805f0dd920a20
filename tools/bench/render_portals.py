#!/usr/bin/env python3
"""Benchmark: ``hvplug render`` of one volume with N distinct target_portals.

Renders N = 1,000, 10,000 and 20,000 (``--sizes``) in-process through
``hvplug.cli.main.main`` (best of ``--rounds``), in one run, and prints each
time with its ratio to the linear baseline: N/1,000 times the N=1,000 time.
A ratio near 1 is linear; near N/1,000 is quadratic.  No host is touched.

    .venv/bin/python tools/bench/render_portals.py [--sizes 1000 10000 20000] [--rounds 3]

Any python3 may start it: one that cannot import hvplug re-runs it with the
project's venv (``$HVPLUG_VENV``, default ``<repo>/.venv``), or says how to
create that venv (exit 2).
"""

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.fuzz
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: hvplug_venv

import hvplug_venv

hvplug_venv.ensure()

from hvplug.cli import main as cli  # noqa: E402 - after the venv is found
from tests.fuzz.generator import CONFIGS, portals_doc  # noqa: E402


def render_seconds(directory: Path, n: int, rounds: int) -> tuple[float, int]:
    path = directory / f"portals-{n}.json"
    path.write_text(json.dumps(portals_doc(n)))
    conf = directory / "bench.conf"
    conf.write_text(CONFIGS["net"])
    best, rc = float("inf"), None
    for _ in range(rounds):
        out, err = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["--config-file", str(conf), "render", "--connection-info", str(path)])
        best = min(best, time.perf_counter() - start)
        if rc != 0:
            print(f"N={n}: exit {rc}: {err.getvalue().strip()[:200]}", file=sys.stderr)
    return best, rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 20_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = sorted(set(args.sizes))
    with tempfile.TemporaryDirectory(prefix="hvplug-bench-") as tmp:
        results = {n: render_seconds(Path(tmp), n, args.rounds) for n in sizes}
    base_n = sizes[0]
    base = results[base_n][0]
    print(f"{'N':>8} {'seconds':>10} {'linear':>10} {'ratio':>7}  exit")
    for n in sizes:
        seconds, rc = results[n]
        linear = base * n / base_n
        print(f"{n:>8} {seconds:>10.3f} {linear:>10.3f} {seconds / linear:>7.2f}  {rc}")
    return 0 if all(rc == 0 for _, rc in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
