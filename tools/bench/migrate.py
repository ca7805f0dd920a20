#!/usr/bin/env python3
"""Benchmark: ``hvplug migrate`` (the CLI, as a process) vs raw ``virsh migrate --live``.

One guest with two CHAP volumes, migrated there and back in every round, by
both sides, interleaved (the side that goes first alternates), so drift in
the machine hits both alike.  Both directions count.

- hvplug: ``hvplug migrate --domain G --to DEST --dest-initiator IQN
  --connection-info F1 --connection-info F2 --json``, one process per
  migration: the destination's part (portal and login probe as the
  destination's IQN, the proving ``qemu-img`` login, the private secret
  defined there and its value set), each disk's ``<source>`` rewritten for
  the destination, ``virDomainMigrate3`` with progress polled from
  ``jobStats``, the source's secrets released.
- raw: ``virsh migrate --live G DEST --xml F``, one process, with the
  destination's disk XML (its initiator IQN and portal) written beforehand,
  and the CHAP secrets defined on the destination by hand beforehand
  (``virsh secret-define`` with the same uuid as on the source, and
  ``secret-set-value --file F --plain``, the password in a 0600 file) and
  undefined on the source afterwards (``secret-undefine``).  Only
  ``virsh migrate`` is in raw's time; the by-hand secret steps are timed
  too and reported beside it ("raw + by hand"), outside the goal's ratio.

Goal: hvplug <= 1.2x raw, in total time over all rounds and both
directions.  Also printed: per-direction medians and minimums; the ratio of
the medians; hvplug's extra time paired within each round (the median of
hvplug minus raw); the migration job's own duration as libvirt measured it
on the destination (the same for both sides: what differs is around it);
each process's CPU time; hvplug's time inside the process (its JSON
``seconds``) and so what the process around it costs.  ``--json`` adds
every sample.

Modes (say which one numbers come from):

- default: this machine's libvirtd <-> lab host 1 (``tools/lab``).  hvplug
  and virsh run on this machine for both directions (lab host -> here with
  ``--connect`` / ``virsh -c``, since this machine's libvirtd does not
  listen on TCP).  Migrations out of this machine take about 2 s of which
  1.5 s is this machine's PID 1 reaping the stopped QEMU (doc/multi-host.md).
- ``--between-lab-hosts``: lab host 1 <-> lab host 2; every command (hvplug
  and virsh alike) runs inside the source lab host through ``tools/lab exec
  HOST --``, as an operator on that host would.  No slow reaping: cleaner
  numbers.  The cost of ``tools/lab exec HOST -- true`` is measured in the
  same rounds and printed.

It brings the lab up if it is down (``tools/lab up``) and down again at the
end if it brought it up (a lab that was up stays up).  It makes its own
uniquely named transient guest (``hvplug-migbench-<hex>``, the diskless
template of the tests), two tgtd targets with CHAP accounts serving sparse
64 MiB files, and a private work directory (0600 connection_info and
password files), attaches the volumes with ``hvplug attach``, and removes
all of it, and every secret of its volumes on every host, at the end, also
after a failure or SIGINT/SIGTERM/SIGHUP.  The hvplug processes run with a
bytecode cache (a private ``PYTHONPYCACHEPREFIX``, filled by the untimed
warm-up round), as an installed hvplug has.

Run as root with the stack up (``tools/stack start``)::

    tools/bench/migrate.py --rounds 5
    tools/bench/migrate.py --rounds 5 --between-lab-hosts
    tools/bench/migrate.py --rounds 5 --json

Started by a python without hvplug, it re-runs itself with the project's
venv (``$HVPLUG_VENV``, default ``<repo>/.venv``).  Exit codes: 0 done
(whether or not the goal is met; the output says), 1 a step failed (what
it made is removed; anything it could not remove is named), 2 not root or
the stack is down.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: hvplug_venv

import hvplug_venv

hvplug_venv.ensure()

import argparse  # noqa: E402 - after the venv is found
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import bench_setup  # noqa: E402 - tools/bench, beside this file
from lxml import etree  # noqa: E402

from hvplug import templates  # noqa: E402
from hvplug.cli.main import load_config  # noqa: E402
from hvplug.target.tgtd_ipc import TgtdIPC  # noqa: E402
from hvplug.virt import config  # noqa: E402
from hvplug.virt import secrets as virt_secrets  # noqa: E402
from hvplug.virt.host import Host  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "tools" / "lab"
THIS_URI = "qemu:///system"
INITIATOR_FILE = Path("/etc/iscsi/initiatorname.iscsi")
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")
LAB_STATE_DIR = Path("/run/hvplug-lab")
RATIO_GOAL = 1.2
VOLUMES = 2
TIMEOUT = 300


class Failed(Exception):
    pass


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv: list[str], env: dict | None = None, what: str | None = None,
        timeout: float = TIMEOUT) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time (s) and result of one process, which must exit 0; the CPU
    time (s, user + system) of the process and of the children it waited
    for (qemu-img, say) is ``result.cpu``."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False, env=env,
                            stdin=subprocess.DEVNULL, timeout=timeout)
    elapsed = time.perf_counter() - t0
    result.cpu = _children_cpu() - cpu0  # type: ignore[attr-defined]
    if result.returncode != 0:
        raise Failed(f"{what or ' '.join(argv[:6])}: exit {result.returncode}: "
                     f"{(result.stderr or result.stdout).strip()[-600:]}")
    return elapsed, result


def this_initiator() -> str:
    for line in INITIATOR_FILE.read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if key.strip() == "InitiatorName":
            return value.strip()
    raise Failed(f"no InitiatorName in {INITIATOR_FILE}")


def hvplug_command() -> list[str]:
    """The console script next to this interpreter (what users run), else ``-m``."""
    script = Path(sys.executable).parent / "hvplug"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hvplug.cli.main"]


@dataclass
class End:
    """One end of the migrations: this machine or a lab host."""

    label: str
    uri: str             # its libvirt URI, from this machine
    initiator: str
    portal: str          # where it reaches tgtd
    lab_name: str | None = None
    host: Host | None = None

    @property
    def qemu_log_dir(self) -> Path:
        if self.lab_name is None:
            return QEMU_LOG_DIR
        return LAB_STATE_DIR / self.lab_name / "var-log-libvirt" / "qemu"


@dataclass
class Route:
    """How one direction runs: the command prefix and URIs, where it runs."""

    name: str
    src: End
    dst: End
    prefix: list[str]    # [] (this machine) or tools/lab exec HOST --
    src_uri: str         # the source's URI, where the command runs
    dst_uri: str         # the destination's URI, where the command runs


@dataclass
class Volume:
    tag: str
    iqn: str
    user: str
    password: str
    backing: Path
    tid: int | None = None
    account: bool = False
    password_file: Path | None = None
    info_files: dict[str, Path] = field(default_factory=dict)  # End.label -> file

    @property
    def usage(self) -> str:
        return f"{self.iqn}/1"

    def info(self, end: End) -> dict:
        data = {"target_portal": end.portal, "target_iqn": self.iqn, "target_lun": 1,
                "target_discovered": False, "volume_id": self.tag, "access_mode": "rw",
                "auth_method": "CHAP", "auth_username": self.user,
                "auth_password": self.password}
        return {"driver_volume_type": "iscsi", "data": data, "serial": self.tag}


class Lab:
    """tools/lab, brought up when it is down, down again when it was ours."""

    def __init__(self):
        self.owned = False
        self.added = False

    @staticmethod
    def status() -> list[dict]:
        result = subprocess.run([str(LAB), "status", "--json"], capture_output=True,
                                text=True, check=False, timeout=TIMEOUT,
                                stdin=subprocess.DEVNULL)
        return json.loads(result.stdout) if result.stdout.strip() else []

    def up(self, hosts: int) -> list[dict]:
        before = self.status()
        if len(before) >= hosts:
            return before[:hosts]
        _, result = run([str(LAB), "up", "--hosts", str(hosts), "--json"],
                        what=f"tools/lab up --hosts {hosts}")
        if before:
            self.added = True
        else:
            self.owned = True
        return json.loads(result.stdout)[:hosts]

    def down(self, ours: set[str]) -> str | None:
        """Take the lab down if it was ours and nothing else runs there; a problem or None."""
        if not self.owned:
            if self.added:
                print("migrate: note: this run added lab host 2 to a lab that was up; the "
                      "lab stays up ('tools/lab down' removes all of it)", file=sys.stderr)
            return None
        foreign = []
        for entry in self.status():
            result = subprocess.run(["virsh", "-c", entry["uri"], "list", "--all", "--name"],
                                    capture_output=True, text=True, check=False, timeout=60)
            foreign += [f"{entry['name']}:{n}" for n in result.stdout.split() if n not in ours]
        if foreign:
            return (f"the lab stays up: guests that are not this benchmark's run there "
                    f"({', '.join(foreign)}); 'tools/lab down' when they are done")
        result = subprocess.run([str(LAB), "down"], capture_output=True, text=True,
                                check=False, timeout=TIMEOUT)
        self.owned = False
        if result.returncode != 0:
            return f"tools/lab down: {(result.stderr or result.stdout).strip()[-400:]}"
        return None


class Bench:
    def __init__(self, rounds: int, between_lab_hosts: bool):
        self.rounds = rounds
        self.between = between_lab_hosts
        self.tag = uuid.uuid4().hex[:8]
        self.guest = f"hvplug-migbench-{self.tag}"
        self.workdir = Path(tempfile.mkdtemp(prefix="hvplug-migbench-"))  # 0700
        self.pycache = Path(tempfile.mkdtemp(prefix="hvplug-migbench-pycache-"))
        self.env = dict(os.environ)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        self.conf = self.workdir / "hvplug.conf"
        self.cli = hvplug_command()
        self.tgt = TgtdIPC()
        self.lab = Lab()
        self.volumes: list[Volume] = []
        self.a: End | None = None
        self.b: End | None = None
        self.there: Route | None = None
        self.back: Route | None = None
        self.guest_made = False

    # -- set-up and tear-down ---------------------------------------------------------

    def _private_file(self, path: Path, text: str) -> Path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def _ends(self) -> None:
        hosts = self.lab.up(2 if self.between else 1)

        def lab_end(entry: dict) -> End:
            return End(label=entry["name"], uri=entry["uri"], initiator=entry["initiator"],
                       portal=f"{entry['peer_address']}:3260", lab_name=entry["name"])

        if self.between:
            self.a, self.b = lab_end(hosts[0]), lab_end(hosts[1])
            exec_a = [str(LAB), "exec", self.a.lab_name, "--"]
            exec_b = [str(LAB), "exec", self.b.lab_name, "--"]
            self.there = Route(f"{self.a.label} -> {self.b.label}", self.a, self.b, exec_a,
                               THIS_URI, self.b.uri)
            self.back = Route(f"{self.b.label} -> {self.a.label}", self.b, self.a, exec_b,
                              THIS_URI, self.a.uri)
        else:
            self.a = End(label="this machine", uri=THIS_URI, initiator=this_initiator(),
                         portal="127.0.0.1:3260")
            self.b = lab_end(hosts[0])
            self.there = Route(f"here -> {self.b.label}", self.a, self.b, [], THIS_URI,
                               self.b.uri)
            self.back = Route(f"{self.b.label} -> here", self.b, self.a, [], self.b.uri,
                              THIS_URI)
        for end in (self.a, self.b):
            end.host = Host(end.uri)

    def set_up(self) -> None:
        self.conf.write_text("")  # the defaults, and no /etc/hvplug/hvplug.conf
        load_config([str(self.conf)])
        self._ends()
        for i in range(VOLUMES):
            tag = f"{self.tag}{i}"
            volume = Volume(tag=tag, iqn=f"iqn.2010-10.org.openstack:volume-hvplug-migbench-{tag}",
                            user=f"migbench{tag}", password=secrets.token_urlsafe(16),
                            backing=self.workdir / f"volume-{i}.img")
            self.volumes.append(volume)
            with open(volume.backing, "wb") as f:
                f.truncate(64 * 2**20)
            volume.tid = self.tgt.new_target(None, volume.iqn,
                                             start=random.randint(20000, 30000))
            self.tgt.new_lun(volume.tid, 1, str(volume.backing))
            self.tgt.bind_initiator(volume.tid, address="ALL")
            self.tgt.new_account(volume.user, volume.password)
            volume.account = True
            self.tgt.bind_account(volume.tid, volume.user)
            volume.password_file = self._private_file(self.workdir / f"password-{i}",
                                                      volume.password)
            for end in (self.a, self.b):
                volume.info_files[end.label] = self._private_file(
                    self.workdir / f"info-{i}-{end.label.replace(' ', '-')}.json",
                    json.dumps(volume.info(end)))
        src = self.a.host
        xml = templates.guest_xml(self.guest, domain_type=src.guest_domain_type())
        self.guest_made = True
        src.call(lambda conn: conn.createXML(xml, 0))
        for volume in self.volumes:  # as hvplug attaches on the source host itself
            self.timed([*self.there.prefix, *self.cli, "--config-file", str(self.conf),
                        "--connect", self.there.src_uri, "attach", "--domain", self.guest,
                        "--connection-info", str(volume.info_files[self.a.label]),
                        "--bus", "scsi", "--json"], what="hvplug attach")

    def tear_down(self) -> list[str]:
        problems = []

        def step(what, undo):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep tearing down, report all
                problems.append(f"{what}: {exc}")

        ends = [e for e in (self.a, self.b) if e is not None and e.host is not None]
        if self.guest_made:
            for end in ends:
                step(f"remove the guest on {end.label}", lambda end=end: self._remove_guest(end))
        for end in ends:
            step(f"undefine the volumes' secrets on {end.label}",
                 lambda end=end: self._drop_secrets(end))
        for volume in self.volumes:
            if volume.tid is not None:
                step(f"delete target {volume.iqn}",
                     lambda v=volume: self.tgt.delete_target(v.tid, force=True))
            if volume.account:
                step(f"delete CHAP account {volume.user}",
                     lambda v=volume: self.tgt.delete_account(v.user))
        for end in ends:
            step(f"close the connection to {end.label}", end.host.close)
        step("remove the work directory", lambda: shutil.rmtree(self.workdir))
        shutil.rmtree(self.pycache, ignore_errors=True)

        def lab_down() -> None:
            problem = self.lab.down({self.guest})
            if problem:
                problems.append(problem)
        step("take the lab down", lab_down)
        return problems

    def _remove_guest(self, end: End) -> None:
        lib = end.host.libvirt
        try:
            dom = end.host.call(lambda conn: conn.lookupByName(self.guest))
        except lib.libvirtError:
            dom = None
        if dom is not None:
            with contextlib.suppress(lib.libvirtError):
                dom.destroy()
            with contextlib.suppress(lib.libvirtError):
                dom.undefine()
        (end.qemu_log_dir / f"{self.guest}.log").unlink(missing_ok=True)

    def _drop_secrets(self, end: End) -> None:
        for volume in self.volumes:
            while (secret := end.host.find_secret("iscsi", volume.usage)) is not None:
                secret.undefine()

    # -- the measured parts ----------------------------------------------------------

    def timed(self, argv: list[str], what: str) -> tuple[float, subprocess.CompletedProcess]:
        return run(argv, env=self.env, what=what)

    def _check_moved(self, route: Route) -> float:
        """Check that the guest runs on the destination only; the migration job's
        own duration (s), as libvirt measured it there (domjobinfo --completed)."""
        dst = route.dst.host
        if dst.domain_state(self.guest) != (True, False):
            raise Failed(f"{route.name}: the guest is not running on {route.dst.label}")
        lib = route.src.host.libvirt
        try:
            route.src.host.call(lambda conn: conn.lookupByName(self.guest))
        except lib.libvirtError:
            stats = dst.domain_call(self.guest, lambda dom: dom.jobStats(
                lib.VIR_DOMAIN_JOB_STATS_COMPLETED))
            return float(stats.get("time_elapsed") or 0) / 1e3
        raise Failed(f"{route.name}: the guest is still on {route.src.label}")

    def hvplug_migrate(self, route: Route) -> dict:
        argv = [*route.prefix, *self.cli, "--config-file", str(self.conf),
                "--connect", route.src_uri, "migrate", "--domain", self.guest,
                "--to", route.dst_uri, "--dest-initiator", route.dst.initiator, "--json"]
        for volume in self.volumes:
            argv += ["--connection-info", str(volume.info_files[route.dst.label])]
        wall, result = self.timed(argv, f"hvplug migrate ({route.name})")
        job = self._check_moved(route)
        document = json.loads(result.stdout)
        if not all(v["source_released"] for v in document["volumes"]):
            raise Failed(f"{route.name}: hvplug kept a source secret: {document['volumes']}")
        return {"wall": wall, "inside": float(document["seconds"]), "cpu": result.cpu,
                "job": job}

    def _dest_xml(self, route: Route) -> tuple[Path, list[str]]:
        """The destination's domain XML (its IQN and portal in each volume disk), and
        the secret uuids the disks reference; written by hand, as an operator would."""
        xml = route.src.host.domain_call(self.guest, lambda dom: dom.XMLDesc(
            route.src.host.libvirt.VIR_DOMAIN_XML_MIGRATABLE))
        root = etree.fromstring(xml.encode())
        host, _, port = route.dst.portal.rpartition(":")
        uuids = []
        iqns = {v.usage for v in self.volumes}
        for disk in root.iterfind("./devices/disk"):
            source = disk.find("source")
            if source is None or source.get("name") not in iqns:
                continue
            for element in source.iterfind("host"):
                element.set("name", host)
                element.set("port", port)
            for element in source.iterfind("initiator/iqn"):
                element.set("name", route.dst.initiator)
            uuids += [s.get("uuid") for s in disk.iterfind(".//auth/secret")]
        if len(uuids) != VOLUMES:
            raise Failed(f"{route.name}: expected {VOLUMES} CHAP disks, found {len(uuids)}")
        path = self.workdir / "dest.xml"
        path.write_text(etree.tostring(root, encoding="unicode"))
        return path, uuids

    def raw_migrate(self, route: Route) -> dict:
        dest_xml, uuids = self._dest_xml(route)  # untimed: written beforehand
        by_hand = 0.0
        for volume, secret_uuid in zip(self.volumes, uuids, strict=True):
            conf = config.LibvirtConfigSecret(
                ephemeral=False, private=True, uuid=secret_uuid,
                description=virt_secrets.owned_description(volume.usage),
                usage_type="iscsi", usage_id=volume.usage)
            secret_file = self.workdir / "secret.xml"
            secret_file.write_text(conf.to_xml())
            virsh = ["virsh", "-q", "-c", route.dst.uri]
            by_hand += self.timed([*virsh, "secret-define", str(secret_file)],
                                  "virsh secret-define")[0]
            by_hand += self.timed([*virsh, "secret-set-value", secret_uuid, "--file",
                                   str(volume.password_file), "--plain"],
                                  "virsh secret-set-value")[0]
            secret_file.unlink()
        wall, result = self.timed(
            [*route.prefix, "virsh", "-q", "-c", route.src_uri, "migrate", "--live",
             self.guest, route.dst_uri, "--xml", str(dest_xml)], f"virsh migrate ({route.name})")
        job = self._check_moved(route)
        for secret_uuid in uuids:
            by_hand += self.timed(["virsh", "-q", "-c", route.src.uri, "secret-undefine",
                                   secret_uuid], "virsh secret-undefine")[0]
        dest_xml.unlink()
        return {"wall": wall, "by_hand": by_hand, "cpu": result.cpu, "job": job}

    def exec_overhead(self, route: Route) -> tuple[float, float]:
        wall, result = self.timed([*route.prefix, "true"], "tools/lab exec ... true")
        return wall, result.cpu

    def pair(self, side: str) -> dict:
        migrate = self.hvplug_migrate if side == "hvplug" else self.raw_migrate
        return {"there": migrate(self.there), "back": migrate(self.back)}

    def run(self) -> dict:
        results: dict = {"hvplug": [], "raw": [], "exec": [], "load": [os.getloadavg()[0]]}
        self.pair("hvplug"), self.pair("raw")  # warm both up (and the bytecode), untimed
        for i in range(self.rounds):
            order = ("hvplug", "raw") if i % 2 == 0 else ("raw", "hvplug")
            for side in order:
                results[side].append(self.pair(side))
            if self.between:
                results["exec"] += [self.exec_overhead(self.there), self.exec_overhead(self.back)]
        results["load"].append(os.getloadavg()[0])
        return results


def summarise(results: dict) -> dict:
    med = statistics.median
    summary: dict = {}
    for side in ("hvplug", "raw"):
        rounds = results[side]
        s: dict = {}
        for direction in ("there", "back"):
            walls = [r[direction]["wall"] for r in rounds]
            s[f"{direction}_median_s"] = med(walls)
            s[f"{direction}_min_s"] = min(walls)
            s[f"{direction}_max_s"] = max(walls)
            s[f"{direction}_cpu_median_s"] = med([r[direction]["cpu"] for r in rounds])
            s[f"{direction}_job_median_s"] = med([r[direction]["job"] for r in rounds])
            if side == "hvplug":
                inside = [r[direction]["inside"] for r in rounds]
                s[f"{direction}_inside_median_s"] = med(inside)
                s[f"{direction}_process_median_s"] = med(
                    [r[direction]["wall"] - r[direction]["inside"] for r in rounds])
            else:
                s[f"{direction}_by_hand_median_s"] = med(
                    [r[direction]["by_hand"] for r in rounds])
        s["total_s"] = sum(r[d]["wall"] for r in rounds for d in ("there", "back"))
        if side == "raw":
            s["by_hand_total_s"] = sum(r[d]["by_hand"] for r in rounds
                                       for d in ("there", "back"))
        summary[side] = s
    summary["ratio_total"] = summary["hvplug"]["total_s"] / summary["raw"]["total_s"]
    summary["ratio_medians"] = (
        (summary["hvplug"]["there_median_s"] + summary["hvplug"]["back_median_s"])
        / (summary["raw"]["there_median_s"] + summary["raw"]["back_median_s"]))
    summary["ratio_total_with_by_hand"] = summary["hvplug"]["total_s"] / (
        summary["raw"]["total_s"] + summary["raw"]["by_hand_total_s"])
    summary["ratio_goal"] = RATIO_GOAL
    for direction in ("there", "back"):  # the same round's hvplug minus raw: drift cancels
        summary[f"{direction}_paired_extra_median_s"] = med(
            [h[direction]["wall"] - r[direction]["wall"]
             for h, r in zip(results["hvplug"], results["raw"], strict=True)])
    summary["samples"] = {side: results[side] for side in ("hvplug", "raw")}
    if results["exec"]:
        summary["lab_exec_true_median_s"] = med([wall for wall, _ in results["exec"]])
        summary["lab_exec_true_cpu_median_s"] = med([cpu for _, cpu in results["exec"]])
    summary["load_average_1min"] = results["load"]  # at the start and at the end
    return summary


def report(summary: dict, bench: Bench) -> None:
    h, r = summary["hvplug"], summary["raw"]
    mode = ("between two lab hosts, every command inside the source lab host (tools/lab exec)"
            if bench.between else "this machine <-> lab host 1, every command run here")
    print(f"hvplug migrate vs virsh migrate --live: {summary['rounds']} interleaved rounds, "
          f"there and back each; {summary['cpus']} CPUs, {summary['domain_type']} guest "
          f"(64 MiB), {VOLUMES} CHAP volumes on tgtd; load average "
          f"{summary['load_average_1min'][0]:.2f} at the start, "
          f"{summary['load_average_1min'][1]:.2f} at the end")
    print(f"mode: {mode}")
    print(f"  there: {bench.there.name}    back: {bench.back.name}")
    print(f"\n{'(seconds)':24}{'there med':>10}{'back med':>10}{'there min':>10}"
          f"{'back min':>10}{'total':>9}")
    for name, s in (("hvplug migrate", h), ("virsh migrate", r)):
        print(f"  {name:22}{s['there_median_s']:10.3f}{s['back_median_s']:10.3f}"
              f"{s['there_min_s']:10.3f}{s['back_min_s']:10.3f}{s['total_s']:9.2f}")
    print(f"  the migration job itself (libvirt's, on the destination): hvplug "
          f"{h['there_job_median_s']:.3f} / {h['back_job_median_s']:.3f}, virsh "
          f"{r['there_job_median_s']:.3f} / {r['back_job_median_s']:.3f} (medians, there / back)")
    print(f"  CPU time of the process (user + system, with its children): hvplug "
          f"{h['there_cpu_median_s']:.3f} / {h['back_cpu_median_s']:.3f}, virsh "
          f"{r['there_cpu_median_s']:.3f} / {r['back_cpu_median_s']:.3f} (medians, there / back)")
    print(f"  hvplug: inside the process (its JSON 'seconds') {h['there_inside_median_s']:.3f} / "
          f"{h['back_inside_median_s']:.3f}; the process around it "
          f"{h['there_process_median_s']:.3f} / {h['back_process_median_s']:.3f} (medians)")
    print(f"  raw's by-hand secret steps (secret-define, secret-set-value on the destination, "
          f"secret-undefine on the source; 2 volumes): {r['there_by_hand_median_s']:.3f} / "
          f"{r['back_by_hand_median_s']:.3f} (medians), not in raw's total")
    if "lab_exec_true_median_s" in summary:
        print(f"  'tools/lab exec HOST -- true' (in both sides' times): "
              f"{summary['lab_exec_true_median_s']:.3f} median, CPU "
              f"{summary['lab_exec_true_cpu_median_s']:.3f}")
    print(f"  hvplug's extra time per migration, paired within each round (median of hvplug "
          f"minus raw): {summary['there_paired_extra_median_s']:.3f} / "
          f"{summary['back_paired_extra_median_s']:.3f} (there / back)")
    ratio = summary["ratio_total"]
    print(f"\nratio hvplug/raw (total time): {ratio:.3f}, goal <= {RATIO_GOAL}: "
          f"{'met' if ratio <= RATIO_GOAL else 'NOT met'}")
    print(f"ratio hvplug/raw of the per-direction medians (there + back), less sensitive to "
          f"outliers: {summary['ratio_medians']:.3f}")
    print(f"ratio hvplug/(raw + its by-hand secret steps): "
          f"{summary['ratio_total_with_by_hand']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed rounds; each migrates there and back with each side (5)")
    parser.add_argument("--between-lab-hosts", action="store_true",
                        help="migrate between lab hosts 1 and 2 instead of this machine and "
                        "lab host 1")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    code = bench_setup.refuse_unless_ready("migrate", "tgtd, qemu:///system and tools/lab")
    if code:
        return code
    bench_setup.stop_on_signals()
    bench = Bench(args.rounds, args.between_lab_hosts)
    failed, summary, problems = None, None, []
    try:
        bench.set_up()
        summary = summarise(bench.run())
        summary.update(rounds=args.rounds, machine=platform.node(),
                       cpus=len(os.sched_getaffinity(0)),
                       domain_type=bench.a.host.guest_domain_type(),
                       mode="between-lab-hosts" if bench.between else "this-machine-lab-host",
                       there=bench.there.name, back=bench.back.name,
                       hvplug_command=" ".join(bench.cli))
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - tear down, then say
        failed = exc
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            problems = bench.tear_down()
    for problem in problems:
        print(f"migrate: cleanup: {problem}", file=sys.stderr)
    if failed is not None:
        what = (f"interrupted ({failed})" if isinstance(failed, KeyboardInterrupt)
                else f"{type(failed).__name__}: {failed}")
        print(f"migrate: FAILED: {what}; everything it created was removed"
              + (" except what is named above" if problems else ""), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        report(summary, bench)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
