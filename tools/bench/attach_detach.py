#!/usr/bin/env python3
"""Benchmark: attach+detach through hvplug's Python API versus raw libvirt-python.

Both sides plug the same iSCSI volume (tgtd on 127.0.0.1, CHAP) into the
same running diskless guest on bus scsi, interleaved cycle by cycle (the
order alternates) so drift in the machine hits both alike.

- hvplug: ``attach_volume`` + ``detach_volume``: portal probe (TCP and one
  iSCSI Login Request, ``hvplug.initiator.login_probe``), private
  secret defined and its value set, free device name, attach, detach, wait
  until the disk left the live XML, secret removed when unused.
- raw: ``attachDeviceFlags`` + ``detachDeviceFlags`` with the XML hvplug
  renders for that volume.  The CHAP secret it needs is defined before and
  removed after each raw cycle, outside the timed part, so hvplug's secret
  handling counts as hvplug overhead.

Prints medians, p99 and the ratio hvplug/raw, and the median of the login
probe alone (the probe ``select_target`` runs, on the same target).  Run as root with the stack
up (``tools/stack start``):  ``.venv/bin/python tools/bench/attach_detach.py``

Any python3 may start it: one that cannot import hvplug re-runs it with the
project's venv (``$HVPLUG_VENV``, default ``<repo>/.venv``), or says how to
create that venv (exit 2).
"""

import argparse
import json
import platform
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: hvplug_venv

import hvplug_venv

hvplug_venv.ensure()

from hvplug import templates  # noqa: E402 - after the venv is found
from hvplug.conf import CONF  # noqa: E402
from hvplug.initiator import login_probe  # noqa: E402
from hvplug.target.tgtd_ipc import TgtdIPC  # noqa: E402
from hvplug.virt import attach  # noqa: E402
from hvplug.virt.host import Host  # noqa: E402
from hvplug.virt.volume import net  # noqa: E402
from hvplug.virt.volume.registry import VolumeDriverRegistry  # noqa: E402

BUS, DEV = "scsi", "sda"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Bench:
    def __init__(self, cycles: int, chap: bool):
        self.cycles, self.chap = cycles, chap
        tag = uuid.uuid4().hex[:8]
        self.iqn = f"iqn.2010-10.org.openstack:volume-hvplug-bench-{tag}"
        self.guest = f"hvplug-bench-{tag}"
        self.user, self.password = f"bench{tag}", secrets.token_urlsafe(16)
        self.workdir = Path(tempfile.mkdtemp(prefix="hvplug-bench-"))
        self.tgt = TgtdIPC()
        self.host = Host("qemu:///system")
        self.registry = VolumeDriverRegistry(self.host)
        self.tid = None

    def info(self) -> dict:
        data = {"target_portal": "127.0.0.1:3260", "target_iqn": self.iqn,
                "target_lun": 1, "volume_id": "bench"}
        if self.chap:
            data.update(auth_method="CHAP", auth_username=self.user,
                        auth_password=self.password)
        return {"driver_volume_type": "iscsi", "data": data, "serial": "bench"}

    def set_up(self) -> None:
        backing = self.workdir / "volume.img"
        with open(backing, "wb") as f:
            f.truncate(64 * 2**20)
        self.tid = self.tgt.new_target(None, self.iqn)
        self.tgt.new_lun(self.tid, 1, str(backing))
        self.tgt.bind_initiator(self.tid, address="ALL")
        if self.chap:
            self.tgt.new_account(self.user, self.password)
            self.tgt.bind_account(self.tid, self.user)
        xml = templates.guest_xml(self.guest, domain_type=self.host.guest_domain_type())
        self.host.call(lambda conn: conn.createXML(xml, 0))

    def tear_down(self) -> None:
        for undo in (lambda: self.host.domain_call(self.guest, lambda d: d.destroy()),
                     lambda: self.tgt.delete_target(self.tid),
                     lambda: self.chap and self.tgt.delete_account(self.user)):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                print(f"cleanup: {exc}", file=sys.stderr)
        secret = self.host.find_secret("iscsi", f"{self.iqn}/1")
        if secret is not None:
            secret.undefine()
        Path(f"/var/log/libvirt/qemu/{self.guest}.log").unlink(missing_ok=True)
        for path in self.workdir.iterdir():
            path.unlink()
        self.workdir.rmdir()

    def hvplug_cycle(self) -> tuple[float, float]:
        info = self.info()
        t0 = time.perf_counter()
        attach.attach_volume(self.host, self.registry, self.guest, info, bus=BUS)
        t1 = time.perf_counter()
        attach.detach_volume(self.host, self.registry, self.guest, connection_info=info)
        return t1 - t0, time.perf_counter() - t1

    def raw_cycle(self) -> tuple[float, float]:
        info = self.info()
        driver = self.registry.driver_for(info)
        secret = None
        if self.chap:
            conf = driver.secret_config(info)
            secret = self.host.call(lambda conn: conn.secretDefineXML(conf.to_xml()))
            secret.setValue(self.password.encode())
            info["data"]["secret_uuid"] = secret.UUIDString()
        xml = driver.get_config(driver.connection_of(info), {"dev": DEV, "bus": BUS}).to_xml()
        lv = self.host.libvirt
        dom = self.host.call(lambda conn: conn.lookupByName(self.guest))
        t0 = time.perf_counter()
        dom.attachDeviceFlags(xml, lv.VIR_DOMAIN_AFFECT_LIVE)
        t1 = time.perf_counter()
        dom.detachDeviceFlags(xml, lv.VIR_DOMAIN_AFFECT_LIVE)
        t2 = time.perf_counter()
        if secret is not None:
            secret.undefine()
        return t1 - t0, t2 - t1

    def probe_cycle(self) -> float:
        """One login probe as ``select_target`` makes it; its duration."""
        t0 = time.perf_counter()
        result = login_probe.probe(
            "127.0.0.1", 3260, self.iqn, net.initiator_name(),
            connect_timeout=CONF.libvirt.iscsi_portal_probe_timeout,
            login_timeout=CONF.libvirt.iscsi_login_probe_timeout or 5.0)
        elapsed = time.perf_counter() - t0
        if not result.answered:
            raise RuntimeError(f"login probe of the bench target: {result.detail}")
        return elapsed

    def run(self) -> dict:
        results = {"hvplug": [], "raw": []}
        self.hvplug_cycle(), self.raw_cycle()  # warm both paths up, untimed
        for i in range(self.cycles):
            order = ("hvplug", "raw") if i % 2 == 0 else ("raw", "hvplug")
            for side in order:
                cycle = self.hvplug_cycle if side == "hvplug" else self.raw_cycle
                results[side].append(cycle())
        results["probe"] = [self.probe_cycle() for _ in range(self.cycles)]
        return results


def summarise(results: dict) -> dict:
    summary = {}
    probes = results.pop("probe")
    summary["login_probe_median_ms"] = statistics.median(probes) * 1e3
    summary["login_probe_p99_ms"] = percentile(probes, 99) * 1e3
    for side, samples in results.items():
        attach_t = [a for a, _ in samples]
        detach_t = [d for _, d in samples]
        total = [a + d for a, d in samples]
        summary[side] = {
            "attach_median_ms": statistics.median(attach_t) * 1e3,
            "detach_median_ms": statistics.median(detach_t) * 1e3,
            "cycle_median_ms": statistics.median(total) * 1e3,
            "cycle_p99_ms": percentile(total, 99) * 1e3,
        }
    summary["ratio_median"] = (summary["hvplug"]["cycle_median_ms"]
                               / summary["raw"]["cycle_median_ms"])
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--no-chap", action="store_true", help="plain iSCSI, no secret")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bench = Bench(args.cycles, chap=not args.no_chap)
    bench.set_up()
    try:
        summary = summarise(bench.run())
    finally:
        bench.tear_down()
    summary.update(cycles=args.cycles, chap=bench.chap, machine=platform.node(),
                   cpus=len(__import__("os").sched_getaffinity(0)),
                   domain_type=bench.host.guest_domain_type())
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.cycles} attach+detach cycles, CHAP={'on' if bench.chap else 'off'}, "
          f"bus {BUS}, {summary['domain_type']} guest, {summary['cpus']} CPUs")
    print(f"{'':8}{'attach med':>12}{'detach med':>12}{'cycle med':>12}{'cycle p99':>12}  (ms)")
    for side in ("hvplug", "raw"):
        s = summary[side]
        print(f"{side:8}{s['attach_median_ms']:12.2f}{s['detach_median_ms']:12.2f}"
              f"{s['cycle_median_ms']:12.2f}{s['cycle_p99_ms']:12.2f}")
    print(f"ratio hvplug/raw (cycle median): {summary['ratio_median']:.3f}  (goal <= 1.15)")
    print(f"login probe alone (part of hvplug's attach): median "
          f"{summary['login_probe_median_ms']:.3f} ms, p99 {summary['login_probe_p99_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
