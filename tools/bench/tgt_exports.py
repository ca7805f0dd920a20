#!/usr/bin/env python3
"""Benchmark: create then remove N tgt exports, hvplug's TgtAdm versus Cinder's way.

Both sides run in one process, one after the other, against one private
tgtd that this script starts on its own control port and portal (``tgtd -f
-C <port> --iscsi portal=127.0.0.1:<port>``) and stops at the end; the
system's tgtd is never touched.  Each side starts from an empty tgtd and
exports the same N sparse files as the same volume ids.

- hvplug: ``TgtAdm.create_export`` then ``remove_export``: the stanza
  written atomically, the target built through tgtd's management socket
  (target, LUN 1, CHAP account + bind, ACL ALL, LUN 1 verified), the export
  record saved; removal proven, forced and verified the same way.
- baseline (Cinder's TgtAdm): the same stanza, written atomically as
  Cinder's ``robust_file_write`` does, then ``tgt-admin --update IQN -c
  STANZA`` and ``tgt-admin --show`` to find the tid and verify LUN 1;
  removal with ``tgt-admin --delete IQN --force``, ``tgt-admin --show`` to
  verify, the CHAP account deleted with tgtadm (Cinder leaves it; deleted
  here so both sides end in the same state), the stanza unlinked.
  tgt-admin passes the CHAP password to tgtadm in argv: that is its way.

Prints total seconds, per-export milliseconds and the ratio baseline/hvplug,
and checks that both sides persisted equivalent stanzas (same directives
and values but the CHAP credentials) and built identical live targets.
Run as root:  ``.venv/bin/python tools/bench/tgt_exports.py --count 1000``

Any python3 may start it: one that cannot import hvplug re-runs it with the
project's venv (``$HVPLUG_VENV``, default ``<repo>/.venv``), or says how to
create that venv (exit 2).
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: hvplug_venv

import hvplug_venv

hvplug_venv.ensure()

from hvplug.conf import CONF  # noqa: E402 - after the venv is found
from hvplug.target.base import random_chap  # noqa: E402
from hvplug.target.tgt import TgtAdm  # noqa: E402
from hvplug.target.tgtd_ipc import TgtdIPC, TgtdIPCError, TgtdUnavailable  # noqa: E402

PREFIX = "iqn.2010-10.org.openstack:"
# Cinder's VOLUME_CONF_WITH_CHAP_AUTH, as its TgtAdm filled it in.
CINDER_STANZA = """
                <target {iqn}>
                    backing-store {path}
                    driver {driver}
                    {chap}
                    write-cache {write_cache}
                </target>
"""
GOAL = 10.0


class PrivateTgtd:
    """A tgtd of the benchmark alone; stopped (SIGKILL) when done."""

    def __init__(self, workdir: Path):
        while True:  # tgtd takes a control port up to 32767
            self.control_port = random.randint(1000, 32767)
            self.socket_path = f"/var/run/tgtd/socket.{self.control_port}"
            if not Path(self.socket_path).exists():
                break
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.portal_port = sock.getsockname()[1]
        self.log = open(workdir / "tgtd.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            ["tgtd", "-f", "-C", str(self.control_port),
             "--iscsi", f"portal=127.0.0.1:{self.portal_port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                TgtdIPC(self.socket_path, timeout=1).show_targets()
                return
            except (TgtdUnavailable, TgtdIPCError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"tgtd did not start; see {self.log.name}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()  # tgtd ignores SIGTERM while it has targets
        self.proc.wait(10)
        self.log.close()
        for path in (self.socket_path, self.socket_path + ".lock"):
            Path(path).unlink(missing_ok=True)


def robust_write(directory: Path, name: str, text: str) -> Path:
    """Cinder's robust_file_write: temp file, fsync, rename, fsync the directory."""
    fd, tmp = tempfile.mkstemp(dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    path = directory / name
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    os.fsync(dir_fd)
    os.close(dir_fd)
    return path


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{argv[0]} {argv[1:4]} exited {result.returncode}: "
                         f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


class Baseline:
    """Cinder's TgtAdm, driving tgt-admin."""

    def __init__(self, tgtd: PrivateTgtd, volumes_dir: Path):
        self.port = str(tgtd.control_port)
        self.volumes_dir = volumes_dir
        self.volumes_dir.mkdir(mode=0o700)
        self.users: dict[str, str] = {}

    def _target_block(self, iqn: str) -> str | None:
        shown = run("tgt-admin", "-C", self.port, "--show")
        match = re.search(rf"(?ms)^Target (\d+): {re.escape(iqn)}\n.*?(?=^Target |\Z)", shown)
        return match[0] if match else None

    def create(self, volume_id: str, path: str) -> None:
        iqn, user = f"{PREFIX}volume-{volume_id}", random_chap(20)
        self.users[volume_id] = user
        chap = f"incominguser {user} {random_chap(16)}"
        stanza = robust_write(self.volumes_dir, f"volume-{volume_id}", CINDER_STANZA.format(
            iqn=iqn, path=path, driver="iscsi", chap=chap, write_cache="on"))
        run("tgt-admin", "-C", self.port, "--update", iqn, "-c", str(stanza))
        block = self._target_block(iqn)
        if block is None:
            raise SystemExit(f"tgt-admin --update did not create {iqn}")
        if "\n        LUN: 1\n" not in block:  # Cinder re-creates a missing LUN 1
            tid = block.split(":")[0].split()[1]
            run("tgtadm", "-C", self.port, "--lld", "iscsi", "--op", "new", "--mode",
                "logicalunit", "--tid", tid, "--lun", "1", "-b", path)

    def remove(self, volume_id: str) -> None:
        iqn = f"{PREFIX}volume-{volume_id}"
        run("tgt-admin", "-C", self.port, "--delete", iqn, "--force")
        if self._target_block(iqn) is not None:
            raise SystemExit(f"tgt-admin --delete left {iqn}")
        run("tgtadm", "-C", self.port, "--lld", "iscsi", "--mode", "account", "--op",
            "delete", "--user", self.users.pop(volume_id))
        (self.volumes_dir / f"volume-{volume_id}").unlink()


def directives(text: str) -> list[tuple[str, str]]:
    """A stanza's (directive, value) pairs, comments dropped, CHAP values masked."""
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.strip("<>").partition(" ")
        pairs.append((key, "USER PASSWORD" if key == "incominguser" else value))
    return pairs


def _mask_accounts(match: re.Match) -> str:
    return match[1] + re.sub(r"(?m)^\s+\S+$", "        USER", match[2]) + match[3]


def live_blocks(socket_path: str) -> dict[str, str]:
    """Every target's show block by IQN; tids, SCSI ids and CHAP user names masked."""
    text = TgtdIPC(socket_path).show_targets()
    blocks = {}
    for block in re.split(r"(?m)^(?=Target \d+: )", text):
        if block:
            iqn = block.split("\n", 1)[0].split(": ", 1)[1]
            block = re.sub(r"^Target \d+:", "Target TID:", block)
            block = re.sub(r"(?m)^\s+SCSI (ID|SN): .*\n", "", block)
            blocks[iqn] = re.sub(r"(?s)(    Account information:\n)(.*?)(    ACL information:)",
                                 _mask_accounts, block)
    return blocks


def timed(label: str, call, calls: list[tuple]) -> list[float]:
    """``call(*args)`` for each of ``calls``; the seconds each took."""
    samples = []
    for n, args in enumerate(calls, 1):
        t0 = time.perf_counter()
        call(*args)
        samples.append(time.perf_counter() - t0)
        if n % 100 == 0:
            print(f"  {label}: {n}/{len(calls)} ({sum(samples):.1f} s)",
                  file=sys.stderr, flush=True)
    return samples


def run_side(name, create, remove, paths, stanza_dir, socket_path):
    """Create all, snapshot stanzas and live targets, remove all; the timings."""
    create_s = timed(f"{name} create", create, list(paths.items()))
    stanzas = {p.name.removesuffix(".conf"): directives(p.read_text())
               for p in stanza_dir.iterdir() if p.name.startswith("volume-")}
    live = live_blocks(socket_path)
    remove_s = timed(f"{name} remove", remove, [(v,) for v in paths])
    left = TgtdIPC(socket_path)
    if left.list_targets() or left.list_accounts():
        raise SystemExit(f"{name} left targets or accounts behind")
    return {"create_s": create_s, "remove_s": remove_s}, stanzas, live


def summary(samples: dict, count: int) -> dict:
    create, remove = sum(samples["create_s"]), sum(samples["remove_s"])
    tenth = max(1, count // 10)
    return {"create_total_s": create, "remove_total_s": remove, "total_s": create + remove,
            "per_export_ms": (create + remove) / count * 1e3,
            "create_first_tenth_ms": sum(samples["create_s"][:tenth]) / tenth * 1e3,
            "create_last_tenth_ms": sum(samples["create_s"][-tenth:]) / tenth * 1e3}


def bench(count: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="hvplug-bench-tgt-"))
    tag = uuid.uuid4().hex[:8]
    volume_ids = [f"bench-{tag}-{i:05d}" for i in range(count)]
    paths = {}
    for volume_id in volume_ids:
        paths[volume_id] = str(workdir / f"{volume_id}.img")
        with open(paths[volume_id], "wb") as f:
            f.truncate(1 << 20)
    tgtd = PrivateTgtd(workdir)
    try:
        CONF([], project="hvplug", default_config_files=[], default_config_dirs=[])
        CONF.set_override("volumes_dir", str(workdir / "hvplug-volumes"), "target")
        CONF.set_override("exports_dir", str(workdir / "hvplug-exports"), "target")
        CONF.set_override("backing_roots", [str(workdir)], "target")  # the volumes' files
        CONF.set_override("iscsi_port", tgtd.portal_port, "target")
        hvplug = TgtAdm(CONF.target, socket_path=tgtd.socket_path)
        mine, mine_stanzas, mine_live = run_side(
            "hvplug", hvplug.create_export, hvplug.remove_export, paths,
            hvplug.volumes_dir, tgtd.socket_path)
        baseline = Baseline(tgtd, workdir / "cinder-volumes")
        theirs, their_stanzas, their_live = run_side(
            "baseline", baseline.create, baseline.remove, paths,
            baseline.volumes_dir, tgtd.socket_path)
    finally:
        tgtd.stop()
    shutil.rmtree(workdir)
    return {
        "count": count, "hvplug": summary(mine, count), "baseline": summary(theirs, count),
        "stanzas_equivalent": sum(mine_stanzas.get(k) == v for k, v in their_stanzas.items()),
        "live_targets_identical": sum(mine_live.get(k) == v for k, v in their_live.items()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="exports per side")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: tgtd answers root only")
    result = bench(args.count)
    result["ratio"] = result["baseline"]["total_s"] / result["hvplug"]["total_s"]
    result.update(machine=platform.node(), cpus=len(os.sched_getaffinity(0)),
                  tgt=run("tgtd", "-V").strip())
    ok = result["stanzas_equivalent"] == result["live_targets_identical"] == args.count
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if ok else 1
    print(f"{args.count} tgt exports created then removed per side; tgt {result['tgt']}, "
          f"{result['cpus']} CPUs, host {result['machine']}")
    print(f"{'':10}{'create s':>10}{'remove s':>10}{'total s':>10}{'ms/export':>11}"
          f"{'create ms first/last tenth':>29}")
    for side in ("hvplug", "baseline"):
        s = result[side]
        print(f"{side:10}{s['create_total_s']:10.2f}{s['remove_total_s']:10.2f}"
              f"{s['total_s']:10.2f}{s['per_export_ms']:11.2f}"
              f"{s['create_first_tenth_ms']:18.2f} / {s['create_last_tenth_ms']:.2f}")
    print(f"ratio baseline/hvplug (total): {result['ratio']:.1f}x  (goal >= {GOAL:.0f}x: "
          f"{'met' if result['ratio'] >= GOAL else 'NOT met'})")
    print(f"stanzas equivalent (directives, CHAP values aside): "
          f"{result['stanzas_equivalent']}/{args.count}")
    print(f"live targets identical (tid, SCSI ids, CHAP user aside): "
          f"{result['live_targets_identical']}/{args.count}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
