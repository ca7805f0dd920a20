#!/usr/bin/env python3
"""Benchmark: G guests x V CHAP volumes attached, then detached, P at a time.

Three sides plug the same volumes into the same running guests, one after
the other in one run (the order rotates with --rounds), each with the same
parallelism P:

- raw: libvirt-python as a careful caller would use it without hvplug:
  ``secretDefineXML`` + ``setValue`` + ``attachDeviceFlags``, then
  ``detachDeviceFlags`` + ``undefine`` (disk XML rendered by hvplug's driver
  beforehand, outside the timing);
- api: ``hvplug.virt.attach.attach_volume`` / ``detach_volume`` in P threads;
- cli: ``hvplug attach`` / ``detach`` in bulk mode, one process per guest
  with V ``--connection-info`` files, P processes at a time.

Every op is timed (api, raw) or every process (cli).  After each side's
detach it checks for leaks: disks left in the guests, secrets left with the
volumes' usages, tgtd sessions left on their targets.  Finally it times one
attach+detach cycle (api) on a host with all G guests running and again
with 1 guest.

Prints ops/s, p50/p99 and the ratios; ``--json`` for the raw numbers.
Run as root with the stack up (``tools/stack start``):
``.venv/bin/python tools/bench/scale.py`` (defaults 50 x 20, P 4).

Any python3 may start it: one that cannot import hvplug re-runs it with the
project's venv (``$HVPLUG_VENV``, default ``<repo>/.venv``), or says how to
create that venv (exit 2).
"""

import argparse
import copy
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: hvplug_venv

import hvplug_venv

hvplug_venv.ensure()

from hvplug import exception, templates  # noqa: E402 - after the venv is found
from hvplug.target.tgtd_ipc import TgtdIPC  # noqa: E402
from hvplug.virt import attach  # noqa: E402
from hvplug.virt.host import Host  # noqa: E402
from hvplug.virt.volume.registry import VolumeDriverRegistry  # noqa: E402

BUS = "scsi"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
CLI = [sys.executable, "-m", "hvplug.cli.main"]
PREFIX = "iqn.2010-10.org.openstack:volume-hvplug-scale-"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def stats(seconds: list[float], ops: int, wall: float) -> dict:
    return {"ops": ops, "wall_s": wall, "ops_per_s": ops / wall,
            "p50_ms": statistics.median(seconds) * 1e3,
            "p99_ms": percentile(seconds, 99) * 1e3}


class Rig:
    """The guests, targets and CHAP accounts of one run; all removed at the end."""

    def __init__(self, guests: int, volumes: int):
        self.tag = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix="hvplug-scale-"))
        self.host = Host("qemu:///system")
        self.registry = VolumeDriverRegistry(self.host)
        self.tgt = TgtdIPC()
        self.guests = [f"hvplug-scale-{self.tag}-{g}" for g in range(guests)]
        self.volumes = volumes
        self.tids: list[int] = []
        self.accounts: dict[str, tuple[str, str]] = {}  # guest -> (user, password)
        self.infos: dict[str, list[dict]] = {}

    def set_up(self) -> None:
        domain_type = self.host.guest_domain_type()
        for g, guest in enumerate(self.guests):
            user, password = f"scale{self.tag}{g}", secrets.token_urlsafe(16)
            self.tgt.new_account(user, password)
            self.accounts[guest] = (user, password)
            self.infos[guest] = [self._export(g, v, user, password)
                                 for v in range(self.volumes)]
            xml = templates.guest_xml(guest, domain_type=domain_type)
            self.host.call(lambda conn, xml=xml: conn.createXML(xml, 0))

    def _export(self, g: int, v: int, user: str, password: str) -> dict:
        iqn = f"{PREFIX}{self.tag}-{g}-{v}"
        backing = self.workdir / f"{g}-{v}.img"
        with open(backing, "wb") as f:
            f.truncate(8 << 20)
        tid = self.tgt.new_target(None, iqn, start=40000)
        self.tids.append(tid)
        self.tgt.new_lun(tid, 1, str(backing))
        self.tgt.bind_initiator(tid, address="ALL")
        self.tgt.bind_account(tid, user)
        return {"driver_volume_type": "iscsi", "serial": f"{g}-{v}",
                "data": {"target_portal": "127.0.0.1:3260", "target_iqn": iqn,
                         "target_lun": 1, "auth_method": "CHAP", "auth_username": user,
                         "auth_password": password, "volume_id": f"{g}-{v}"}}

    def pairs(self) -> list[tuple[str, dict]]:
        """Every (guest, info), volume-major, so parallel ops hit different guests."""
        return [(guest, self.infos[guest][v]) for v in range(self.volumes)
                for guest in self.guests]

    def leaks(self) -> dict:
        disks = sum(len(self.host.domain_xml(g).split("<disk ")) - 1 for g in self.guests)
        usages = {f"{info['data']['target_iqn']}/1" for _, info in self.pairs()}
        left = [s for s in self.host.list_secrets() if s.usageID() in usages]
        deadline = time.monotonic() + 15
        while True:
            targets = self.tgt.list_targets()
            sessions = sum(len(targets[t].sessions) for t in self.tids if t in targets)
            if not sessions or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return {"disks": disks, "secrets": len(left), "sessions": sessions}

    def tear_down(self) -> None:
        for guest in self.guests:
            try:
                self.host.domain_call(guest, lambda d: d.destroy())
            except exception.DomainNotFound:
                pass  # destroyed already, for the 1-guest measurement
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                print(f"cleanup {guest}: {exc}", file=sys.stderr)
            Path(f"/var/log/libvirt/qemu/{guest}.log").unlink(missing_ok=True)
        usages = {f"{info['data']['target_iqn']}/1" for _, info in self.pairs()}
        for secret in self.host.list_secrets():
            if secret.usageID() in usages:
                secret.undefine()
        for tid in self.tids:
            self.tgt.delete_target(tid, force=True)
        for user, _ in self.accounts.values():
            self.tgt.delete_account(user)
        for path in self.workdir.iterdir():
            path.unlink()
        self.workdir.rmdir()


def timed_pool(work, items, parallel: int) -> tuple[list[float], float, int]:
    """``work(item)`` over items in P threads: (durations, wall, failures)."""
    def one(item):
        t0 = time.perf_counter()
        try:
            work(item)
            return time.perf_counter() - t0, 0
        except Exception as exc:  # noqa: BLE001 - counted, and shown once
            print(f"  failed: {exc}", file=sys.stderr)
            return time.perf_counter() - t0, 1
    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        done = list(pool.map(one, items))
    return [d for d, _ in done], time.perf_counter() - t0, sum(f for _, f in done)


class Raw:
    def __init__(self, rig: Rig):
        self.rig, self.lib = rig, rig.host.libvirt
        self.prepared: dict[int, tuple[str, str]] = {}  # id(info) -> (xml, usage)
        self.secrets: dict[int, object] = {}

    def prepare(self) -> None:
        """Disk XML per volume (with a fixed secret uuid), outside the timing."""
        count: dict[str, int] = {}
        for guest, info in self.rig.pairs():
            copied = copy.deepcopy(info)
            n = count[guest] = count.get(guest, -1) + 1
            driver = self.rig.registry.driver_for(copied)
            conf = driver.secret_config(copied)
            conf.uuid = copied["data"]["secret_uuid"] = str(uuid.uuid4())
            dev = "sd" + ("" if n < 26 else LETTERS[n // 26 - 1]) + LETTERS[n % 26]
            xml = driver.get_config(driver.connection_of(copied), {"dev": dev, "bus": BUS}).to_xml()
            self.prepared[id(info)] = (xml, conf.to_xml())

    def attach(self, pair) -> None:
        guest, info = pair
        disk_xml, secret_xml = self.prepared[id(info)]
        secret = self.rig.host.call(lambda conn: conn.secretDefineXML(secret_xml))
        secret.setValue(info["data"]["auth_password"].encode())
        self.secrets[id(info)] = secret
        self.rig.host.domain_call(
            guest, lambda d: d.attachDeviceFlags(disk_xml, self.lib.VIR_DOMAIN_AFFECT_LIVE))

    def detach(self, pair) -> None:
        guest, info = pair
        disk_xml, _ = self.prepared[id(info)]
        self.rig.host.domain_call(
            guest, lambda d: d.detachDeviceFlags(disk_xml, self.lib.VIR_DOMAIN_AFFECT_LIVE))
        self.secrets.pop(id(info)).undefine()


class Api:
    def __init__(self, rig: Rig):
        self.rig = rig
        self.host = Host("qemu:///system")  # its own connection, as raw has the rig's
        self.registry = VolumeDriverRegistry(self.host)

    def attach(self, pair) -> None:
        guest, info = pair
        attach.attach_volume(self.host, self.registry, guest, copy.deepcopy(info), bus=BUS)

    def detach(self, pair) -> None:
        guest, info = pair
        attach.detach_volume(self.host, self.registry, guest, connection_info=copy.deepcopy(info))


class Cli:
    """One bulk ``hvplug`` process per guest, P processes at a time."""

    def __init__(self, rig: Rig):
        self.rig = rig
        self.files: dict[str, list[str]] = {}
        for guest in rig.guests:
            self.files[guest] = []
            for info in rig.infos[guest]:
                path = rig.workdir / f"ci-{info['serial']}.json"
                path.write_text(json.dumps(info))
                path.chmod(0o600)
                self.files[guest].append(str(path))

    def _run(self, command: str, guest: str) -> None:
        argv = [*CLI, command, "--domain", guest, "--json"]
        if command == "attach":
            argv += ["--bus", BUS]
        for path in self.files[guest]:
            argv += ["--connection-info", path]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"hvplug {command} {guest}: {done.stderr.strip()[:300]}")

    def attach(self, guest) -> None:
        self._run("attach", guest)

    def detach(self, guest) -> None:
        self._run("detach", guest)


def run_side(name: str, side, items, parallel: int, ops_per_item: int, rig: Rig) -> dict:
    print(f"[{name}] attach {len(items) * ops_per_item} volumes, P={parallel} ...",
          file=sys.stderr, flush=True)
    a_times, a_wall, a_fail = timed_pool(side.attach, items, parallel)
    d_times, d_wall, d_fail = timed_pool(side.detach, items, parallel)
    ops = len(items) * ops_per_item
    result = {"attach": stats(a_times, ops, a_wall), "detach": stats(d_times, ops, d_wall),
              "failures": a_fail + d_fail, "leaks": rig.leaks()}
    result["ops_per_s"] = 2 * ops / (a_wall + d_wall)
    return result


def cycle_cost(rig: Rig, api: Api, cycles: int) -> float:
    """Median seconds of one api attach+detach cycle into the first guest."""
    guest, info = rig.guests[0], rig.infos[rig.guests[0]][0]
    samples = []
    api.attach((guest, info)), api.detach((guest, info))  # warm-up
    for _ in range(cycles):
        t0 = time.perf_counter()
        api.attach((guest, info))
        api.detach((guest, info))
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def measure(args) -> dict:
    rig = Rig(args.guests, args.volumes)
    print(f"setting up {args.guests} guests x {args.volumes} volumes ...", file=sys.stderr)
    try:
        rig.set_up()
        raw, api, cli = Raw(rig), Api(rig), Cli(rig)
        raw.prepare()
        sides = {"raw": (raw, rig.pairs(), 1), "api": (api, rig.pairs(), 1),
                 "cli": (cli, rig.guests, args.volumes)}
        order = ["raw", "api", "cli"]
        results: dict[str, list] = {name: [] for name in order}
        for round_ in range(args.rounds):
            for name in order[round_ % 3:] + order[:round_ % 3]:
                side, items, per = sides[name]
                results[name].append(run_side(name, side, items, args.parallel, per, rig))
        many = cycle_cost(rig, api, args.cycles)
        for guest in rig.guests[1:]:
            rig.host.domain_call(guest, lambda d: d.destroy())
        one = cycle_cost(rig, api, args.cycles)
        return {"guests": args.guests, "volumes": args.volumes, "parallel": args.parallel,
                "rounds": args.rounds, "sides": results,
                "cycle_ms": {"1_guest": one * 1e3, f"{args.guests}_guests": many * 1e3,
                             "ratio": many / one}}
    finally:
        rig.tear_down()


def report(summary: dict) -> None:
    g, v, p = summary["guests"], summary["volumes"], summary["parallel"]
    print(f"{g} guests x {v} CHAP volumes, parallelism {p}, {summary['rounds']} round(s)")
    print(f"{'side':6}{'ops/s':>9}{'att p50':>9}{'att p99':>9}{'det p50':>9}{'det p99':>9}"
          f"{'fail':>6}  leaks (disks/secrets/sessions)   [p50/p99 per op, ms; cli per process]")
    best = {}
    for name, runs in summary["sides"].items():
        for r in runs:
            print(f"{name:6}{r['ops_per_s']:9.1f}{r['attach']['p50_ms']:9.1f}"
                  f"{r['attach']['p99_ms']:9.1f}{r['detach']['p50_ms']:9.1f}"
                  f"{r['detach']['p99_ms']:9.1f}{r['failures']:6d}  "
                  f"{r['leaks']['disks']}/{r['leaks']['secrets']}/{r['leaks']['sessions']}")
        best[name] = statistics.median(r["ops_per_s"] for r in runs)
    print(f"throughput api/raw: {best['api'] / best['raw']:.3f}  (goal >= 0.85)")
    print(f"throughput cli/raw: {best['cli'] / best['raw']:.3f}")
    c = summary["cycle_ms"]
    print(f"one attach+detach cycle: {c['1_guest']:.1f} ms with 1 guest, "
          f"{c[f'{g}_guests']:.1f} ms with {g}: ratio {c['ratio']:.3f}  (goal <= 1.2)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guests", type=int, default=50)
    parser.add_argument("--volumes", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cycles", type=int, default=30,
                        help="cycles of the 1-guest / G-guest cost measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary = measure(args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        report(summary)
    failures = sum(r["failures"] for runs in summary["sides"].values() for r in runs)
    leaks = sum(sum(r["leaks"].values()) for runs in summary["sides"].values() for r in runs)
    return 1 if failures or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
