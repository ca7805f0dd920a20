#!/usr/bin/env python3
"""End-to-end demo: a sparse file, exported by tgtd with CHAP, plugged into a guest.

Steps (each printed with its time):
  1. create a sparse backing file
  2. export it from tgtd on 127.0.0.1 as an iSCSI target with a CHAP account
     and an ACL that admits only this host's initiator IQN
  3. start a diskless guest
  4. `hvplug attach` (QEMU's built-in initiator; the CHAP password goes into
     a private libvirt secret, passed to hvplug on stdin)
  5. show it: `virsh domblklist`, tgtd's session list, the size QEMU sees,
     `hvplug list` and `hvplug verify`
  6. `hvplug detach`
  7. clean up everything, even when a step failed

Run it as root through `tools/run-demo` (prefix sudo if you are not root), which
installs and starts what it needs.
Exit codes: 0 the demo passed, 1 a step failed.
"""

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from hvplug import templates
from hvplug.target.tgtd_ipc import TgtdIPC
from hvplug.virt.host import Host
from hvplug.virt.volume.net import initiator_name

START = time.monotonic()


def step(title: str) -> None:
    print(f"\n[{time.monotonic() - START:7.3f} s] == {title}", flush=True)


def show(line: str) -> None:
    print(f"            {line}", flush=True)


def run(argv: list[str], stdin: str | None = None, check: bool = True) -> str:
    """Run a command, echo it and its output; CHAP passwords only ever go via stdin."""
    show("$ " + " ".join(argv))
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    for line in (result.stdout + result.stderr).rstrip().splitlines():
        show("  " + line)
    if check and result.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} "
                           f"exited {result.returncode}")
    return result.stdout


def hvplug_cli(*args: str, stdin: str | None = None) -> str:
    return run([sys.executable, "-m", "hvplug.cli.main", *args], stdin=stdin)


class Demo:
    def __init__(self, size_mib: int, bus: str):
        self.size = size_mib * 1024 * 1024
        self.bus = bus
        self.tag = uuid.uuid4().hex[:8]
        self.iqn = f"iqn.2010-10.org.openstack:volume-hvplug-demo-{self.tag}"
        self.guest = f"hvplug-demo-{self.tag}"
        self.user = f"demo{self.tag}"
        self.password = secrets.token_urlsafe(18)
        self.workdir = Path(tempfile.mkdtemp(prefix="hvplug-demo-"))
        self.backing = self.workdir / "volume.img"
        self.tgt = TgtdIPC()
        self.host = Host("qemu:///system")
        self.tid: int | None = None
        self.cleanups: list[tuple[str, callable]] = []

    def connection_info(self) -> str:
        return json.dumps({
            "driver_volume_type": "iscsi",
            "data": {"target_portal": "127.0.0.1:3260", "target_iqn": self.iqn,
                     "target_lun": 1, "target_discovered": False,
                     "volume_id": self.tag, "auth_method": "CHAP",
                     "auth_username": self.user, "auth_password": self.password,
                     "encrypted": False, "access_mode": "rw"},
            "serial": self.tag})

    def create_file(self) -> None:
        step(f"1. create a sparse {self.size // 2**20} MiB backing file")
        with open(self.backing, "wb") as f:
            f.truncate(self.size)
        self.cleanups.append(("remove the backing file", lambda: self.backing.unlink()))
        show(f"{self.backing}: {self.size} bytes, "
             f"{os.stat(self.backing).st_blocks * 512} bytes allocated")

    def export(self) -> None:
        step("2. export it from tgtd on 127.0.0.1:3260 with CHAP and an initiator ACL")
        self.tid = self.tgt.new_target(None, self.iqn)
        self.cleanups.append(("delete the target", lambda: self.tgt.delete_target(self.tid)))
        self.tgt.new_lun(self.tid, 1, str(self.backing))
        self.tgt.new_account(self.user, self.password)
        self.cleanups.append(("delete the CHAP account",
                              lambda: self.tgt.delete_account(self.user)))
        self.tgt.bind_account(self.tid, self.user)
        self.tgt.bind_initiator(self.tid, name=initiator_name())
        show(f"target {self.iqn} (tid {self.tid}), LUN 1, CHAP user {self.user}, "
             f"ACL: initiator {initiator_name()} only")

    def start_guest(self) -> None:
        domain_type = self.host.guest_domain_type()
        step(f"3. start the diskless guest {self.guest} ({domain_type})")
        xml = templates.guest_xml(self.guest, domain_type=domain_type)
        self.host.call(lambda conn: conn.createXML(xml, 0))
        self.cleanups.append(("remove the guest's QEMU log", lambda: Path(
            f"/var/log/libvirt/qemu/{self.guest}.log").unlink(missing_ok=True)))
        self.cleanups.append(("destroy the guest", lambda: self.host.domain_call(
            self.guest, lambda dom: dom.destroy())))

    def attach(self) -> str:
        step("4. hvplug attach (connection_info on stdin, CHAP into a private secret)")
        self.cleanups.append(("remove the CHAP secret if still defined", self.drop_secret))
        out = hvplug_cli("attach", "--domain", self.guest, "--connection-info", "-",
                         "--bus", self.bus, "--json", stdin=self.connection_info())
        return json.loads(out)["dev"]

    def drop_secret(self) -> None:
        secret = self.host.find_secret("iscsi", f"{self.iqn}/1")
        if secret is not None:
            secret.undefine()

    def inspect(self, dev: str) -> None:
        step("5. it is there")
        run(["virsh", "-c", "qemu:///system", "domblklist", self.guest])
        sessions = self.tgt.list_targets()[self.tid].sessions
        show(f"tgtd sessions of tid {self.tid}: "
             + (", ".join(f"{s.initiator} from {', '.join(s.addresses)}"
                                for s in sessions) or "none"))
        run(["virsh", "-c", "qemu:///system", "domblkinfo", self.guest, dev])
        capacity = self.host.block_capacity(self.guest, dev)
        show(f"QEMU sees {capacity} bytes (exported {self.size}): "
             + ("match" if capacity == self.size else "MISMATCH"))
        if capacity != self.size or not sessions:
            raise RuntimeError("the guest does not see the volume as exported")
        hvplug_cli("list", "--domain", self.guest)
        hvplug_cli("verify", "--domain", self.guest)
        run(["virsh", "-c", "qemu:///system", "secret-list"])

    def detach(self, dev: str) -> None:
        step("6. hvplug detach")
        hvplug_cli("detach", "--domain", self.guest, "--dev", dev)
        run(["virsh", "-c", "qemu:///system", "domblklist", self.guest])
        deadline = time.monotonic() + 10
        while self.tgt.list_targets()[self.tid].sessions:
            if time.monotonic() > deadline:
                raise RuntimeError("QEMU's iSCSI session outlived the detach")
            time.sleep(0.05)
        show(f"tgtd sessions of tid {self.tid}: none")

    def clean_up(self) -> bool:
        step("7. clean up")
        ok = True
        for what, undo in reversed(self.cleanups):
            try:
                undo()
                show(f"{what}: done")
            except Exception as exc:  # noqa: BLE001 - keep cleaning, report at the end
                ok = False
                show(f"{what}: FAILED ({exc})")
        with contextlib.suppress(OSError):
            self.workdir.rmdir()
        self.host.close()
        return ok

    def run(self) -> int:
        failed = None
        try:
            self.create_file()
            self.export()
            self.start_guest()
            dev = self.attach()
            self.inspect(dev)
            self.detach(dev)
        except Exception as exc:  # noqa: BLE001 - report the failed step, then clean up
            failed = exc
        cleaned = self.clean_up()
        total = time.monotonic() - START
        if failed is not None:
            print(f"\nDEMO FAILED after {total:.3f} s: {failed}", file=sys.stderr)
            return 1
        if not cleaned:
            print(f"\nDEMO FAILED after {total:.3f} s: cleanup incomplete", file=sys.stderr)
            return 1
        print(f"\nDemo passed in {total:.3f} s; nothing was left behind.")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="volume size (1024)")
    parser.add_argument("--bus", default="scsi", choices=["scsi", "virtio", "sata"],
                        help="disk bus (scsi: unplugs without a guest OS)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("demo: run it as root (tools/run-demo; prefix sudo if you are not root): tgtd "
              "and qemu:///system need it",
              file=sys.stderr)
        return 2
    return Demo(args.size_mib, args.bus).run()


if __name__ == "__main__":
    sys.exit(main())
