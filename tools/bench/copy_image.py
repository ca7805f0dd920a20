#!/usr/bin/env python3
"""Benchmark: copy an image onto an iSCSI volume, three ways, side by side.

- hvplug: ``hvplug.image.iscsi_copy.copy_to_volume`` (qemu-img convert
  ``-W -m 8`` straight to ``driver=iscsi``, no host attach);
- untuned: the same qemu-img convert without ``-W -m 8`` (one coroutine,
  in order), as a plain ``qemu-img convert ... iscsi://`` would run;
- local: ``qemu-img convert`` of the same image to a local raw file (what
  the disk and page cache alone allow), the ceiling of any copy.

The volume is a sparse file exported from tgtd on 127.0.0.1 with CHAP; the
image is random data (no zero detection shortcut). Dirty pages are synced,
untimed, before every run; all three ways end in the page cache, as tgtd's
write-cache does. Each way runs
``--rounds`` times, interleaved; medians are printed with MiB/s and ratios.
Run as root with the stack up:  ``.venv/bin/python tools/bench/copy_image.py``

Any python3 may start it: one that cannot import hvplug re-runs it with the
project's venv (``$HVPLUG_VENV``, default ``<repo>/.venv``), or says how to
create that venv (exit 2).
"""

import argparse
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: hvplug_venv

import hvplug_venv

hvplug_venv.ensure()

from hvplug.image import iscsi_copy  # noqa: E402 - after the venv is found
from hvplug.target.tgtd_ipc import TgtdIPC  # noqa: E402


def untuned_copy(image: Path, data: dict) -> None:
    with iscsi_copy._password_file(data["auth_password"]) as secret:
        source = f"driver=raw,file.driver=file,file.filename={image}"
        subprocess.run(["qemu-img", "convert", "-n", "--object",
                        f"secret,id=chap,file={secret}", "--image-opts",
                        "--target-image-opts", source, iscsi_copy.image_opts(data, "chap")],
                       check=True, capture_output=True)


def local_copy(image: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(dest)],
                   check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    iqn = f"iqn.2010-10.org.openstack:volume-hvplug-bench-copy-{tag}"
    user, password = f"copy{tag}", secrets.token_urlsafe(16)
    work = Path(tempfile.mkdtemp(prefix="hvplug-bench-copy-"))
    image, backing, local = work / "image.raw", work / "volume.img", work / "local.raw"
    with open(image, "wb") as f:
        f.writelines(os.urandom(1 << 20) for _ in range(args.size_mib))
    with open(backing, "wb") as f:
        f.truncate(args.size_mib << 20)
    tgt = TgtdIPC()
    tid = tgt.new_target(None, iqn)
    try:
        tgt.new_lun(tid, 1, str(backing))
        tgt.new_account(user, password)
        tgt.bind_account(tid, user)
        tgt.bind_initiator(tid, address="ALL")
        data = {"target_portal": "127.0.0.1:3260", "target_iqn": iqn, "target_lun": 1,
                "auth_method": "CHAP", "auth_username": user, "auth_password": password}
        ways = {"hvplug": lambda: iscsi_copy.copy_to_volume(str(image), data, "raw"),
                "untuned": lambda: untuned_copy(image, data),
                "local": lambda: local_copy(image, local)}
        times = {name: [] for name in ways}
        for round_ in range(args.rounds):
            order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
            for name in order:
                os.sync()  # untimed: no run pays for the previous one's writeback
                start = time.perf_counter()
                ways[name]()
                times[name].append(time.perf_counter() - start)
    finally:
        tgt.delete_target(tid, force=True)
        tgt.delete_account(user)
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"copy of a {args.size_mib} MiB random raw image, {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, host {platform.node()}")
    for name, median in medians.items():
        print(f"  {name:8} median {median:7.3f} s  {args.size_mib / median:8.1f} MiB/s")
    print(f"hvplug vs untuned qemu-img convert: {medians['untuned'] / medians['hvplug']:.2f}x "
          f"faster; hvplug reaches {medians['local'] / medians['hvplug'] * 100:.0f}% of the "
          "local file copy's speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
