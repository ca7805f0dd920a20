#!/usr/bin/env python3
"""Benchmark: what the ``hvplug`` command costs as a process, against virsh.

In one run, on one machine, side by side:

1. Start-up: ``hvplug --help`` and one argument error (``hvplug attach``
   without ``--domain``, exit 2), against ``python -c pass`` with the same
   interpreter and ``virsh --help``; N interleaved runs of each, medians.
   Goal: ``hvplug --help`` <= 150 ms.
2. Attach+detach: N interleaved rounds of
   - CLI: ``hvplug attach --domain G --connection-info FILE --bus scsi --json``
     then ``hvplug detach --domain G --connection-info FILE --json``, two
     processes (hvplug defines the CHAP secret, sets its value, attaches;
     detaches, waits until the disk left, undefines the secret);
   - virsh: ``secret-define``, ``secret-set-value --file F --plain`` (the
     password from a 0600 file, never argv), ``attach-device --live``,
     ``detach-device --live``, ``secret-undefine``: five processes, with the
     disk and secret XML hvplug renders for the same volume (rendered before
     the round, outside the timing).
   Goal: CLI <= 2x virsh (round medians).

Every process it times runs with a bytecode cache, as an installed hvplug
(pip writes the ``.pyc`` files) or any python run twice has: the cache is a
private directory (``PYTHONPYCACHEPREFIX``), filled by the untimed warm-up
runs, and ``PYTHONDONTWRITEBYTECODE`` is dropped for them.  Without it each
start would compile hvplug's modules again (``--no-bytecode-cache`` measures
that).

It creates its own uniquely named transient guest (``hvplug-clibench-<hex>``,
xml_templates/guest.xml), a tgtd target with a CHAP account serving a sparse
64 MiB file, and a private work directory (the 0600 connection_info and
password files), and removes all of it, and any secret left for the volume,
at the end, also after a failure or SIGINT/SIGTERM/SIGHUP.

3. With ``--against REV`` (a commit, tag or branch of this repository):
   N interleaved rounds of the same CLI attach+detach by this tree's hvplug
   and by REV's (checked out in a temporary git worktree, removed at the
   end), wall time and the CPU time of each process.  Both run as
   ``python -S`` with the tree and the venv's site-packages on
   ``PYTHONPATH``: the editable install's finder would otherwise load this
   tree's hvplug for both; so the absolute numbers are a little below the
   console script's.

Run as root with the stack up (``tools/stack start``)::

    tools/bench/cli_startup.py                 # 20 runs/rounds each
    tools/bench/cli_startup.py --runs 50 --json
    tools/bench/cli_startup.py --importtime    # also: the CLI attach's slowest imports
    tools/bench/cli_startup.py --no-bytecode-cache   # every start compiles hvplug again
    tools/bench/cli_startup.py --against 3c711a7     # also: this tree's CLI against that commit's

Started by a python without hvplug, it re-runs itself with the project's
venv (``$HVPLUG_VENV``, default ``<repo>/.venv``).  Exit codes: 0 done
(whether or not the goals are met; the output says), 1 a step failed, 2 not
root or the stack is down.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hvplug_venv

hvplug_venv.ensure()

import argparse  # noqa: E402 - after the venv is found
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import bench_setup  # noqa: E402 - tools/bench, beside this file

from hvplug import templates  # noqa: E402
from hvplug.cli.main import load_config  # noqa: E402
from hvplug.target.tgtd_ipc import TgtdIPC  # noqa: E402
from hvplug.virt import attach  # noqa: E402
from hvplug.virt.host import Host  # noqa: E402
from hvplug.virt.volume.registry import VolumeDriverRegistry  # noqa: E402

URI = "qemu:///system"
REPO = Path(__file__).resolve().parents[2]
# One CLI command of a tree on PYTHONPATH (with -S): its run() where it has
# one (the quick exit), else sys.exit(main()) as its console script did.
TREE_CLI = ("import sys\nimport hvplug.cli.main as cli\n"
            "cli.run() if hasattr(cli, 'run') else sys.exit(cli.main())")
HELP_GOAL_MS = 150.0
RATIO_GOAL = 2.0


def _python() -> str:
    return sys.executable


def hvplug_command() -> list[str]:
    """The console script next to this interpreter (what users run), else ``-m``."""
    script = Path(sys.executable).parent / "hvplug"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hvplug.cli.main"]


class Failed(Exception):
    pass


def child_env(pycache: Path | None) -> dict[str, str]:
    """This environment, with bytecode cached in ``pycache`` (None: as it is)."""
    env = dict(os.environ)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def timed(argv: list[str], expect: int = 0, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> float:
    """Wall time of one process, in ms; its exit code must be ``expect``."""
    t0 = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    elapsed = (time.perf_counter() - t0) * 1e3
    if result.returncode != expect:
        raise Failed(f"{' '.join(argv[:3])} ... exited {result.returncode} (expected "
                     f"{expect}): {(result.stderr or result.stdout).strip()[-400:]}")
    return elapsed


class Bench:
    def __init__(self, runs: int, bytecode_cache: bool = True):
        self.runs = runs
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        self.iqn = f"iqn.2010-10.org.openstack:volume-hvplug-clibench-{tag}"
        self.guest = f"hvplug-clibench-{tag}"
        self.user, self.password = f"clibench{tag}", secrets.token_urlsafe(16)
        self.workdir = Path(tempfile.mkdtemp(prefix="hvplug-clibench-"))  # 0700
        self.pycache = (Path(tempfile.mkdtemp(prefix="hvplug-clibench-pycache-"))
                        if bytecode_cache else None)
        self.env = child_env(self.pycache)
        self.conf = self.workdir / "hvplug.conf"
        self.info_file = self.workdir / "connection_info.json"
        self.password_file = self.workdir / "chap-password"
        self.tgt = TgtdIPC()
        self.host: Host | None = None
        self.registry = None
        self.tid: int | None = None
        self.account = False
        self.guest_started = False
        self.cli = hvplug_command()
        self.worktree: Path | None = None  # --against: REV checked out

    # -- set-up and tear-down ---------------------------------------------------------

    def info(self) -> dict:
        return {"driver_volume_type": "iscsi",
                "data": {"target_portal": "127.0.0.1:3260", "target_iqn": self.iqn,
                         "target_lun": 1, "volume_id": self.tag, "auth_method": "CHAP",
                         "auth_username": self.user, "auth_password": self.password,
                         "access_mode": "rw"},
                "serial": self.tag}

    def _private_file(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def set_up(self) -> None:
        self.conf.write_text("")  # the defaults, and no /etc/hvplug/hvplug.conf
        load_config([str(self.conf)])
        self.host = Host(URI)
        self.registry = VolumeDriverRegistry(self.host)
        self._private_file(self.info_file, json.dumps(self.info()))
        self._private_file(self.password_file, self.password)
        backing = self.workdir / "volume.img"
        with open(backing, "wb") as f:
            f.truncate(64 * 2**20)
        self.tid = self.tgt.new_target(None, self.iqn)
        self.tgt.new_lun(self.tid, 1, str(backing))
        self.tgt.bind_initiator(self.tid, address="ALL")
        self.tgt.new_account(self.user, self.password)
        self.account = True
        self.tgt.bind_account(self.tid, self.user)
        xml = templates.guest_xml(self.guest, domain_type=self.host.guest_domain_type())
        self.host.call(lambda conn: conn.createXML(xml, 0))
        self.guest_started = True

    def tear_down(self) -> list[str]:
        problems = []
        steps = []
        if self.guest_started:
            steps.append(("destroy the guest", lambda: self.host.domain_call(
                self.guest, lambda d: d.destroy())))
        if self.tid is not None:
            steps.append(("delete the target", lambda: self.tgt.delete_target(self.tid)))
        if self.account:
            steps.append(("delete the CHAP account",
                          lambda: self.tgt.delete_account(self.user)))
        if self.host is not None:
            steps.append(("undefine the volume's secret", self._drop_secret))
        steps.append(("remove the guest's QEMU log", lambda: Path(
            f"/var/log/libvirt/qemu/{self.guest}.log").unlink(missing_ok=True)))
        if self.worktree is not None:
            steps.append(("remove the worktree of --against", self._remove_worktree))
        for what, undo in steps:
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep tearing down, report all
                problems.append(f"{what}: {exc}")
        for path in self.workdir.iterdir():
            path.unlink()
        self.workdir.rmdir()
        if self.pycache is not None:
            shutil.rmtree(self.pycache, ignore_errors=True)
        if self.host is not None:
            self.host.close()
        return problems

    def _drop_secret(self) -> None:
        while (secret := self.host.find_secret("iscsi", f"{self.iqn}/1")) is not None:
            secret.undefine()

    # -- the measured parts ----------------------------------------------------------

    def timed(self, argv: list[str], expect: int = 0) -> float:
        return timed(argv, expect, self.env)

    def startup(self) -> dict[str, list[float]]:
        sides = {
            "hvplug --help": ([*self.cli, "--help"], 0),
            "hvplug attach (argument error)": ([*self.cli, "attach"], 2),
            "python -c pass": ([_python(), "-c", "pass"], 0),
            "virsh --help": (["virsh", "--help"], 0),
        }
        results: dict[str, list[float]] = {name: [] for name in sides}
        for argv, code in sides.values():  # warm the page and bytecode caches, untimed
            self.timed(argv, code)
        names = list(sides)
        for i in range(self.runs):
            for name in names[i % len(names):] + names[:i % len(names)]:
                argv, code = sides[name]
                results[name].append(self.timed(argv, code))
        return results

    def cli_round(self) -> dict[str, float]:
        common = ["--config-file", str(self.conf), "--domain", self.guest,
                  "--connection-info", str(self.info_file), "--json"]
        return {
            "attach": self.timed([*self.cli, "attach", *common, "--bus", "scsi"]),
            "detach": self.timed([*self.cli, "detach", *common]),
        }

    def virsh_round(self) -> dict[str, float]:
        info = self.info()
        _, disk_xml, secret_xml = attach.render_volume(self.registry, info, bus="scsi",
                                                       dev="sda")
        secret_uuid = re.search(r"<uuid>([0-9a-f-]+)</uuid>", secret_xml).group(1)
        disk_file, secret_file = self.workdir / "disk.xml", self.workdir / "secret.xml"
        disk_file.write_text(disk_xml)
        secret_file.write_text(secret_xml)
        virsh = ["virsh", "-q", "-c", URI]
        times = {}
        try:
            times["secret-define"] = self.timed([*virsh, "secret-define", str(secret_file)])
            times["secret-set-value"] = self.timed([*virsh, "secret-set-value", secret_uuid,
                                                    "--file", str(self.password_file),
                                                    "--plain"])
            device = [self.guest, str(disk_file), "--live"]
            times["attach-device"] = self.timed([*virsh, "attach-device", *device])
            times["detach-device"] = self.timed([*virsh, "detach-device", *device])
            times["secret-undefine"] = self.timed([*virsh, "secret-undefine", secret_uuid])
        finally:
            disk_file.unlink()
            secret_file.unlink()
        times["attach"] = sum(times[k] for k in ("secret-define", "secret-set-value",
                                                  "attach-device"))
        times["detach"] = times["detach-device"] + times["secret-undefine"]
        return times

    def rounds(self) -> dict[str, list[dict[str, float]]]:
        results: dict[str, list[dict[str, float]]] = {"cli": [], "virsh": []}
        self.cli_round(), self.virsh_round()  # warm both up (and the bytecode of attach/detach), untimed
        for i in range(self.runs):
            order = ("cli", "virsh") if i % 2 == 0 else ("virsh", "cli")
            for side in order:
                results[side].append(self.cli_round() if side == "cli" else self.virsh_round())
        return results

    def _remove_worktree(self) -> None:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                        str(self.worktree)], capture_output=True, check=True)

    def against(self, rev: str) -> dict[str, list[dict[str, float]]]:
        """This tree's CLI attach+detach against ``rev``'s, interleaved."""
        tmp = Path(tempfile.mkdtemp(prefix="hvplug-clibench-rev-"))
        tmp.rmdir()  # git worktree add makes it
        added = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach",
                                str(tmp), rev], capture_output=True, text=True)
        if added.returncode != 0:
            raise Failed(f"--against {rev}: git worktree add failed: "
                         f"{added.stderr.strip()[-300:]}")
        self.worktree = tmp
        found = subprocess.run(
            [sys.executable, "-S", "-c", "import hvplug; print(hvplug.__file__)"],
            capture_output=True, text=True, cwd=tmp,
            env={**self.env, "PYTHONPATH": f"{tmp}{os.pathsep}{sysconfig.get_path('purelib')}"})
        if not found.stdout.startswith(str(tmp)):
            raise Failed(f"--against {rev}: its hvplug is not the one imported "
                         f"({found.stdout.strip() or found.stderr.strip()[-200:]})")
        site_packages = sysconfig.get_path("purelib")
        trees = {"this tree": REPO, rev: tmp}
        # Each runs in its tree: python -c puts the working directory first on
        # sys.path, before PYTHONPATH.
        envs = {name: {**self.env, "PYTHONPATH": f"{tree}{os.pathsep}{site_packages}"}
                for name, tree in trees.items()}
        common = ["--config-file", str(self.conf), "--domain", self.guest,
                  "--connection-info", str(self.info_file), "--json"]

        def one(name: str, command: list[str]) -> tuple[float, float]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = timed([sys.executable, "-S", "-c", TREE_CLI, *command], 0, envs[name],
                         cwd=trees[name])
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e3
            return wall, cpu

        def round_of(name: str) -> dict[str, float]:
            (attach, cpu_a), (detach, cpu_d) = (one(name, ["attach", *common, "--bus", "scsi"]),
                                                one(name, ["detach", *common]))
            return {"attach": attach, "detach": detach, "cpu_attach": cpu_a, "cpu_detach": cpu_d}

        names = list(trees)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for name in names:  # warm up (bytecode of both trees), untimed
            round_of(name)
        for i in range(self.runs):
            for name in (names if i % 2 == 0 else names[::-1]):
                results[name].append(round_of(name))
        return results

    def importtime(self, top: int) -> list[tuple[str, float, float]]:
        """One CLI attach and detach under ``-X importtime``: the slowest imports."""
        common = ["--config-file", str(self.conf), "--domain", self.guest,
                  "--connection-info", str(self.info_file), "--json"]
        rows: list[tuple[str, float, float]] = []
        for command in (["attach", *common, "--bus", "scsi"], ["detach", *common]):
            argv = [sys.executable, "-X", "importtime", "-m", "hvplug.cli.main", *command]
            result = subprocess.run(argv, capture_output=True, text=True, check=False,
                                    env=self.env)
            if result.returncode != 0:
                raise Failed(f"hvplug {command[0]} under -X importtime exited "
                             f"{result.returncode}: {result.stderr[-400:]}")
            for line in result.stderr.splitlines():
                match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
                if match and not match.group(3):  # top-level imports only
                    rows.append((f"{command[0]}: {match.group(4)}",
                                 int(match.group(1)) / 1e3, int(match.group(2)) / 1e3))
        return sorted(rows, key=lambda r: -r[2])[:top]


def summarise(startup: dict, rounds: dict) -> dict:
    med = statistics.median
    summary: dict = {"startup_median_ms": {name: med(v) for name, v in startup.items()}}
    for side, samples in rounds.items():
        keys = samples[0].keys()
        summary[f"{side}_median_ms"] = {k: med([s[k] for s in samples]) for k in keys}
        summary[f"{side}_median_ms"]["round"] = med([s["attach"] + s["detach"]
                                                     for s in samples])
    summary["help_ms"] = summary["startup_median_ms"]["hvplug --help"]
    summary["help_goal_ms"] = HELP_GOAL_MS
    summary["ratio_cli_virsh"] = (summary["cli_median_ms"]["round"]
                                  / summary["virsh_median_ms"]["round"])
    summary["ratio_goal"] = RATIO_GOAL
    return summary


def summarise_against(rev: str, results: dict[str, list[dict[str, float]]]) -> dict:
    med = statistics.median
    sides = {}
    for name, samples in results.items():
        sides[name] = {key: med([s[key] for s in samples]) for key in samples[0]}
        sides[name]["round"] = med([s["attach"] + s["detach"] for s in samples])
        sides[name]["cpu_per_process"] = med([s[k] for s in samples
                                              for k in ("cpu_attach", "cpu_detach")])
    return {"rev": rev, "sides": sides,
            "ratio_round": sides["this tree"]["round"] / sides[rev]["round"],
            "ratio_cpu": sides["this tree"]["cpu_per_process"] / sides[rev]["cpu_per_process"]}


def report_against(against: dict, runs: int) -> None:
    print(f"\nCLI attach+detach, this tree against {against['rev']} ({runs} interleaved "
          "rounds, python -S, medians, ms)")
    print(f"  {'':14}{'attach':>10}{'detach':>10}{'round':>10}{'CPU/process':>14}")
    for name, side in against["sides"].items():
        print(f"  {name[:14]:14}{side['attach']:10.1f}{side['detach']:10.1f}"
              f"{side['round']:10.1f}{side['cpu_per_process']:14.1f}")
    print(f"  this tree / {against['rev']}: round {against['ratio_round']:.2f}, "
          f"CPU per process {against['ratio_cpu']:.2f}")


def report(summary: dict, runs: int, imports) -> None:
    s = summary["startup_median_ms"]
    print(f"hvplug CLI start-up and attach+detach vs virsh: {runs} interleaved runs/rounds, "
          f"{summary['cpus']} CPUs, {summary['domain_type']} guest, bus scsi, CHAP, "
          f"bytecode {'cached' if summary['bytecode_cache'] else 'NOT cached'}")
    print("\nstart-up (median wall time of a process, ms)")
    for name, value in s.items():
        print(f"  {name:34}{value:9.1f}")
    help_ms = summary["help_ms"]
    print(f"  hvplug --help: {help_ms:.1f} ms, goal <= {HELP_GOAL_MS:.0f} ms: "
          f"{'met' if help_ms <= HELP_GOAL_MS else 'NOT met'}; "
          f"{help_ms - s['python -c pass']:.1f} ms above 'python -c pass'")
    cli, virsh = summary["cli_median_ms"], summary["virsh_median_ms"]
    print("\nattach+detach (median wall time, ms)")
    print(f"  {'':10}{'attach':>10}{'detach':>10}{'round':>10}")
    for name, side in (("CLI", cli), ("virsh", virsh)):
        print(f"  {name:10}{side['attach']:10.1f}{side['detach']:10.1f}{side['round']:10.1f}")
    print("  virsh steps: " + ", ".join(
        f"{k} {virsh[k]:.1f}" for k in ("secret-define", "secret-set-value", "attach-device",
                                         "detach-device", "secret-undefine")))
    ratio = summary["ratio_cli_virsh"]
    print(f"  ratio CLI/virsh (round medians): {ratio:.2f}, goal <= {RATIO_GOAL:.0f}: "
          f"{'met' if ratio <= RATIO_GOAL else 'NOT met'}")
    if imports:
        print("\nslowest top-level imports of one CLI attach and detach (-X importtime, ms)")
        for name, own, cumulative in imports:
            print(f"  {name:50}{cumulative:9.1f} (own {own:.1f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20,
                        help="start-up runs and attach+detach rounds per side (20)")
    parser.add_argument("--importtime", action="store_true",
                        help="also list the slowest imports of one CLI attach and detach")
    parser.add_argument("--no-bytecode-cache", dest="bytecode_cache", action="store_false",
                        help="time the processes with the environment as it is: with "
                        "PYTHONDONTWRITEBYTECODE set, every start compiles hvplug again")
    parser.add_argument("--against", metavar="REV",
                        help="also run this tree's CLI attach+detach against REV's (a commit, "
                        "tag or branch), interleaved")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.against is not None:
        found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet",
                                "--end-of-options", f"{args.against}^{{commit}}"],
                               capture_output=True, text=True)
        if found.returncode != 0:
            said = found.stderr.strip().splitlines()
            parser.error(f"--against: {args.against!r} is not a commit, tag or branch of "
                         f"{REPO}; give one that 'git log' shows"
                         + (f" (git: {said[0]})" if said else ""))
    code = bench_setup.refuse_unless_ready("cli_startup", "tgtd and qemu:///system")
    if code:
        return code
    bench_setup.stop_on_signals()
    bench = Bench(args.runs, bytecode_cache=args.bytecode_cache)
    failed = None
    summary, imports, problems = None, [], []
    try:
        bench.set_up()
        startup = bench.startup()
        rounds = bench.rounds()
        against = bench.against(args.against) if args.against else None
        if args.importtime:
            imports = bench.importtime(15)
        summary = summarise(startup, rounds)
        if against is not None:
            summary["against"] = summarise_against(args.against, against)
        summary.update(runs=args.runs, machine=platform.node(),
                       bytecode_cache=args.bytecode_cache,
                       cpus=len(os.sched_getaffinity(0)),
                       domain_type=bench.host.guest_domain_type(),
                       hvplug=" ".join(bench.cli))
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - tear down, then say
        failed = exc
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            problems = bench.tear_down()
    for problem in problems:
        print(f"cli_startup: cleanup: {problem}", file=sys.stderr)
    if failed is not None:
        what = (f"interrupted ({failed})" if isinstance(failed, KeyboardInterrupt)
                else f"{type(failed).__name__}: {failed}")
        print(f"cli_startup: FAILED: {what}; everything it created was removed"
              + (" except what is named above" if problems else ""), file=sys.stderr)
        return 1
    if args.json:
        summary["slowest_imports"] = imports
        print(json.dumps(summary, indent=2))
    else:
        report(summary, args.runs, imports)
        if "against" in summary:
            report_against(summary["against"], args.runs)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
