#!/usr/bin/env python3
"""End-to-end demo: hvplug's target side piped into attach, as the README shows.

Steps (each printed with its time, every command with its output):
  1. write the demo's own hvplug configuration (a private work directory:
     [target] backing_roots, exports_dir and volumes_dir inside it, helper
     tgtadm, portal 127.0.0.1:3260), so nothing outside it is touched
  2. start a diskless guest
  3. `hvplug target create-export --volume-id ID --path FILE --size SIZE
     | hvplug attach --domain GUEST --connection-info - --bus BUS --json`:
     two processes and a pipe.  create-export makes the sparse backing file
     and a tgtd target with a CHAP account of its own, and prints the
     connection_info; attach reads it on stdin and puts the CHAP password
     into a private libvirt secret.  The password travels only through the
     pipe: never in an argv, never in what the demo prints (checked at the end)
  4. show it: `hvplug target show` (password masked), `virsh domblklist`,
     tgtd's session list, `virsh domblkinfo` and the size QEMU sees (it must
     be the exported size), `hvplug list`, `hvplug verify`, `virsh secret-list`
  5. `hvplug detach`, and QEMU's iSCSI session goes away
  6. `hvplug target remove-export`
  7. clean up whatever is still there, even when a step failed or the demo
     was interrupted: the disk, the guest and its log, the secret, the
     export, the backing file, the work directory -- only what this run
     made, all named hvplug-demo-<hex>; then check that none of it is left

Run it as root through `tools/run-demo` (prefix sudo if you are not root), which
installs and starts what it needs.  Started by a python that cannot import
hvplug, it re-runs itself with the project's venv (tools/hvplug_venv.py).
Exit codes: 0 the demo passed, 1 a step failed, 2 not root or bad arguments.
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: hvplug_venv

import hvplug_venv

hvplug_venv.ensure()

from hvplug import templates  # noqa: E402 - after the venv is found
from hvplug.target.tgtd_ipc import TgtdIPC  # noqa: E402
from hvplug.virt.host import Host  # noqa: E402

START = time.monotonic()
URI = "qemu:///system"
IQN_PREFIX = "iqn.2010-10.org.openstack:"
COMMAND_TIMEOUT = 300  # seconds any one command may take
PRINTED: list[str] = []  # every line the demo printed, for the password check

# `hvplug` is the venv's console script next to this interpreter.
_SCRIPT = Path(sys.executable).parent / "hvplug"
HVPLUG = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "hvplug.cli.main"]


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP: stop the steps, clean up."""


def step(title: str) -> None:
    line = f"\n[{time.monotonic() - START:7.3f} s] == {title}"
    PRINTED.append(line)
    print(line, flush=True)


def show(line: str) -> None:
    PRINTED.append(line)
    print(f"            {line}", flush=True)


def shown(argv: list[str]) -> str:
    """``argv`` as a shell line, the hvplug executable written ``hvplug``."""
    if argv[:len(HVPLUG)] == HVPLUG:
        argv = ["hvplug", *argv[len(HVPLUG):]]
    return shlex.join(argv)


def show_output(text: str, prefix: str = "  ") -> None:
    for line in text.rstrip().splitlines():
        show(prefix + line)


def run(argv: list[str], check: bool = True) -> str:
    """Run a command, echo it and its output; its stdout."""
    show("$ " + shown(argv))
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=COMMAND_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{shown(argv)} did not finish within {COMMAND_TIMEOUT} s") from None
    show_output(result.stdout + result.stderr)
    if check and result.returncode != 0:
        raise RuntimeError(f"{shown(argv)} exited {result.returncode}")
    return result.stdout


def pipeline(first: list[str], second: list[str]) -> str:
    """``first | second`` as two processes; echo both, return second's stdout.

    ``first``'s stdout goes straight into ``second``'s stdin: this process
    never reads it.  ``first``'s stderr goes to a file (no pipe to fill up).
    """
    first_name, second_name = (shown(argv).split(" -")[0] for argv in (first, second))
    show(f"$ {shown(first)} \\")
    show(f"    | {shown(second)}")
    with tempfile.TemporaryFile(mode="w+") as first_err:
        producer = subprocess.Popen(first, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=first_err)
        try:
            consumer = subprocess.Popen(second, stdin=producer.stdout, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        except BaseException:
            stop(producer)
            raise
        finally:
            producer.stdout.close()  # the consumer holds the read end now
        try:
            out, err = consumer.communicate(timeout=COMMAND_TIMEOUT)
            first_rc = producer.wait(timeout=COMMAND_TIMEOUT)
        except BaseException:
            for proc in (producer, consumer):
                stop(proc)
            raise
        first_err.seek(0)
        show_output(first_err.read(), prefix=f"  [{first_name}] ")
    show_output(out + err, prefix=f"  [{second_name}] ")
    if first_rc != 0 or consumer.returncode != 0:
        raise RuntimeError(f"the pipe failed: {first_name} exited {first_rc}, "
                           f"{second_name} exited {consumer.returncode}")
    return out


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM first, so that hvplug undoes what it began; SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Demo:
    def __init__(self, size_mib: int, bus: str):
        self.size_mib = size_mib
        self.size = size_mib * 1024 * 1024
        self.bus = bus
        self.tag = uuid.uuid4().hex[:8]
        self.name = f"hvplug-demo-{self.tag}"  # the volume id and the guest's name
        self.iqn = f"{IQN_PREFIX}volume-{self.name}"
        self.lun = 1  # tgt: LUN 0 is its controller
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))  # 0700
        self.config = self.workdir / "hvplug.conf"
        self.exports_dir = self.workdir / "exports"
        self.backing = self.workdir / "volumes" / f"{self.name}.img"
        self.tgt = TgtdIPC()
        self.host = Host(URI)
        self.dev: str | None = None  # the disk while it is attached
        self.chap_user: str | None = None  # from the export record
        self.password: str | None = None  # from the export record; never printed

    def hvplug(self, *args: str) -> list[str]:
        """An hvplug command line with the demo's configuration file."""
        return [*HVPLUG, *args, "--config-file", str(self.config)]

    # -- the steps -----------------------------------------------------------
    def write_config(self) -> None:
        step(f"1. the demo's configuration, in its own work directory {self.workdir}")
        self.config.write_text(
            "[target]\n"
            "iscsi_helper = tgtadm\n"
            "iscsi_ip_address = 127.0.0.1\n"
            "iscsi_port = 3260\n"
            f"iscsi_target_prefix = {IQN_PREFIX}\n"
            f"backing_roots = {self.backing.parent}\n"
            f"exports_dir = {self.exports_dir}\n"
            f"volumes_dir = {self.workdir / 'tgt'}\n")
        show(f"{self.config}:")
        show_output(self.config.read_text(), prefix="    ")
        show(f"hvplug is {HVPLUG[0] if len(HVPLUG) == 1 else shlex.join(HVPLUG)}")

    def start_guest(self) -> None:
        domain_type = self.host.guest_domain_type()
        step(f"2. start the diskless guest {self.name} ({domain_type})")
        xml = templates.guest_xml(self.name, domain_type=domain_type)
        self.host.call(lambda conn: conn.createXML(xml, 0))
        run(["virsh", "-c", URI, "domstate", self.name])

    def export_and_attach(self) -> None:
        step(f"3. export a sparse {self.size_mib} MiB file with hvplug's target side, "
             "pipe its connection_info into hvplug attach")
        out = pipeline(
            self.hvplug("target", "create-export", "--volume-id", self.name,
                        "--path", str(self.backing), "--size", f"{self.size_mib}M"),
            self.hvplug("attach", "--domain", self.name, "--connection-info", "-",
                        "--bus", self.bus, "--json"))
        self.dev = json.loads(out)["dev"]
        show(f"{self.backing}: {self.backing.stat().st_size} bytes, "
             f"{self.backing.stat().st_blocks * 512} bytes allocated")

    def inspect(self) -> None:
        step("4. it is there")
        record = json.loads(run(self.hvplug("target", "show", "--volume-id", self.name,
                                            "--json")))
        if (record["iqn"], record["lun"]) != (self.iqn, self.lun):
            raise RuntimeError(f"the export is {record['iqn']} LUN {record['lun']}, "
                               f"not {self.iqn} LUN {self.lun}")
        tid = record["tid"]
        run(["virsh", "-c", URI, "domblklist", self.name])
        sessions = self.tgt.list_targets()[tid].sessions
        show(f"tgtd sessions of tid {tid}: "
             + (", ".join(f"{s.initiator} from {', '.join(s.addresses)}"
                          for s in sessions) or "none"))
        run(["virsh", "-c", URI, "domblkinfo", self.name, self.dev])
        capacity = self.host.block_capacity(self.name, self.dev)
        show(f"QEMU sees {capacity} bytes (exported {self.size}): "
             + ("match" if capacity == self.size else "MISMATCH"))
        if capacity != self.size or not sessions:
            raise RuntimeError("the guest does not see the volume as exported")
        run(self.hvplug("list", "--domain", self.name))
        run(self.hvplug("verify", "--domain", self.name))
        run(["virsh", "-c", URI, "secret-list"])

    def detach(self) -> None:
        step("5. hvplug detach")
        self._detach()
        run(["virsh", "-c", URI, "domblklist", self.name])
        tid = self._tid()
        deadline = time.monotonic() + 10
        while tid is not None and self.tgt.list_targets()[tid].sessions:
            if time.monotonic() > deadline:
                raise RuntimeError("QEMU's iSCSI session outlived the detach")
            time.sleep(0.05)
        show(f"tgtd sessions of tid {tid}: none")
        run(["virsh", "-c", URI, "secret-list"])

    def remove_export(self) -> None:
        step("6. hvplug target remove-export")
        self._remove_export()
        run(self.hvplug("target", "list"))

    # -- undoing -------------------------------------------------------------
    def _detach(self) -> None:
        run(self.hvplug("detach", "--domain", self.name, "--dev", self.dev))
        self.dev = None

    def _remove_export(self) -> None:
        self._remember_account()
        run(self.hvplug("target", "remove-export", "--volume-id", self.name))

    def _record(self) -> Path:
        return self.exports_dir / f"{self.name}.json"

    def _remember_account(self) -> None:
        """The export's CHAP user and password, from its root-only record: what
        the clean-up check and the password check look for (never printed)."""
        try:
            data = json.loads(self._record().read_text())
        except (OSError, ValueError):
            return
        self.chap_user = data.get("auth_username") or self.chap_user
        self.password = data.get("auth_password") or self.password

    def _tid(self) -> int | None:
        for tid, info in self.tgt.list_targets().items():
            if info.iqn == self.iqn:
                return tid
        return None

    def _delete_target(self) -> None:
        tid = self._tid()
        accounts = self.tgt.list_targets()[tid].accounts
        self.tgt.delete_target(tid)
        for user in accounts:
            self.tgt.delete_account(user)
        show(f"deleted tid {tid} ({self.iqn}) and its CHAP account(s) through tgtd's socket")

    def _secret(self):
        return self.host.find_secret("iscsi", f"{self.iqn}/{self.lun}")

    def _guest_defined(self) -> bool:
        names = self.host.call(lambda conn: [d.name() for d in conn.listAllDomains(0)])
        return self.name in names

    def clean_up(self) -> bool:
        step("7. clean up what is still there")
        undo = [
            ("detach the disk", lambda: self.dev is not None, self._detach),
            ("destroy the guest", self._guest_defined,
             lambda: self.host.domain_call(self.name, lambda dom: dom.destroy())),
            ("remove the guest's QEMU log", self._qemu_log().exists,
             lambda: self._qemu_log().unlink(missing_ok=True)),
            ("undefine the CHAP secret", lambda: self._secret() is not None,
             lambda: self._secret().undefine()),
            ("remove the export", self._record().exists, self._remove_export),
            ("delete a tgtd target of this IQN without a record (an interrupted "
             "create-export)", lambda: self._tid() is not None, self._delete_target),
            ("remove the backing file", self.backing.exists, self.backing.unlink),
        ]
        ok = True
        for what, needed, action in undo:
            try:
                if not needed():
                    show(f"{what}: nothing to do")
                    continue
                action()
                show(f"{what}: done")
            except Exception as exc:  # noqa: BLE001 - keep cleaning, report at the end
                ok = False
                show(f"{what}: FAILED ({exc})")
        return self._check_nothing_left(ok)

    def _qemu_log(self) -> Path:
        return Path(f"/var/log/libvirt/qemu/{self.name}.log")

    def _check_nothing_left(self, cleaned: bool) -> bool:
        left = []
        try:
            if self._guest_defined():
                left.append(f"guest {self.name}")
            if self._secret() is not None:
                left.append(f"the secret of {self.iqn}/{self.lun}")
            if self._tid() is not None:
                left.append(f"tgtd target {self.iqn}")
            if self._qemu_log().exists():
                left.append(str(self._qemu_log()))
            if self.chap_user and self.chap_user in self.tgt.list_accounts():
                left.append(f"tgtd CHAP account {self.chap_user}")
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failure
            left.append(f"(could not check: {exc})")
        if cleaned and not left:
            shutil.rmtree(self.workdir)
            show(f"removed the work directory {self.workdir}")
        elif self.workdir.exists():
            show(f"kept the work directory {self.workdir} (its export record and "
                 f"configuration, for `hvplug target remove-export --config-file "
                 f"{self.config} --volume-id {self.name}`)")
            left.append(str(self.workdir))
        for thing in left:
            show(f"LEFT BEHIND: {thing}")
        if not left:
            show(f"checked: no guest, secret, tgtd target, CHAP account or file of "
                 f"{self.name} is left")
        return cleaned and not left

    # -- the whole run -------------------------------------------------------
    def run(self) -> int:
        failed = None
        try:
            self.write_config()
            self.start_guest()
            self.export_and_attach()
            self._remember_account()
            self.inspect()
            self.detach()
            self.remove_export()
        except Exception as exc:  # noqa: BLE001 - report the failed step, then clean up
            failed = exc
            self._remember_account()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the clean-up runs to its end
        problems = [] if failed is None else [str(failed)]
        if not self.clean_up():
            problems.append("cleanup incomplete")
        self.host.close()
        if self.password and any(self.password in line for line in PRINTED):
            problems.append("the CHAP password was printed")
        total = time.monotonic() - START
        if problems:
            print(f"\nDEMO FAILED after {total:.3f} s: {'; '.join(problems)}", file=sys.stderr)
            return 1
        if self.password:
            print("\nChecked: the CHAP password (read from the root-only export record) is "
                  "in no line the demo printed and no command line it ran; only the pipe "
                  "carried it.")
        print(f"Demo passed in {total:.3f} s; nothing was left behind.")
        return 0


def _interrupted(signum, _frame) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="volume size (1024)")
    parser.add_argument("--bus", default="scsi", choices=["scsi", "virtio", "sata"],
                        help="disk bus (scsi: unplugs without a guest OS)")
    args = parser.parse_args()
    if not 2 <= args.size_mib <= 1 << 20:
        parser.error("--size-mib must be between 2 and 1048576")  # exit 2
    if os.geteuid() != 0:
        print("demo: run it as root (tools/run-demo; prefix sudo if you are not root): tgtd "
              "and qemu:///system need it",
              file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    return Demo(args.size_mib, args.bus).run()


if __name__ == "__main__":
    sys.exit(main())
