"""A killed or signalled ``hvplug attach`` / ``detach`` leaves the host consistent.

The CLI runs as a real child process; its DEBUG log on stderr says where it
is (secret defined, volume connected, device attached or detached), and the
test kills it the moment a chosen line appears, or after a fixed delay.

After a SIGKILL nothing in hvplug runs, so a secret may be left with no
disk (an orphan): ``hvplug reconcile`` is what repairs that.  Reconcile
removes orphans host-wide, and other test runs share this libvirtd, so the
test runs ``hvplug reconcile --dry-run --json`` (which changes nothing) to
see what reconcile finds about this volume, and applies the repair it
proposes to this volume's secret alone, through reconcile's own code.
Afterwards each volume is either fully attached (disk + the secret it
references) or fully gone (no disk, no secret of its usage).

SIGTERM and SIGINT are handled by hvplug itself: what was under way is
rolled back (or, for a detach, completed) and the command exits 1.
"""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from hvplug.utils import locks
from hvplug.virt import config, reconcile, secrets
from tests.functional.helpers import (
    CLI,
    CLI_TIMEOUT,
    attach,
    detach,
    disk_element,
    domblklist,
    run_cli,
    sessions,
    usage_secret,
    wait_for,
)

# The DEBUG log without --debug: main()'s logging.basicConfig is then a
# no-op, and --debug's "show tracebacks" stays off, so stderr must hold none.
DEBUG_LOG_CLI = [sys.executable, "-c", (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.DEBUG, "
    "format='%(levelname)s %(name)s: %(message)s')\n"
    "from hvplug.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n")]

DEFINED = "defined secret "
CONNECTED = "volume connected for "
ATTACHED = " attached to "
DETACHED = " detached from "
REMOVED = "removed secret "
HALF_ATTACHED = "removing half-attached "
INTERRUPTED = ("Interrupted by {}; what was under way was rolled back, so nothing is "
               "left half-done.")
LATE = "hvplug: {} arrived after the operation had completed; its result stands"


@pytest.fixture(autouse=True)
def sweep_lock_files():
    """A SIGKILLed hvplug leaves its lock file (as reconcile would, clear those
    nobody holds; a file another test holds is left alone)."""
    yield
    locks.sweep()


class Child:
    """``hvplug`` as a child process whose stderr is read line by line."""

    def __init__(self, argv: list[str], info: dict):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.watchdog_fired = False
        self._watchdog = threading.Timer(CLI_TIMEOUT, self._hung)
        self._watchdog.start()
        self.proc.stdin.write(json.dumps(info))
        self.proc.stdin.close()
        self.lines: list[str] = []

    def _hung(self) -> None:
        self.watchdog_fired = True
        self.proc.kill()

    def until(self, marker: str) -> bool:
        """Read stderr up to the first line holding ``marker``; False at EOF."""
        for line in self.proc.stderr:
            self.lines.append(line)
            if marker in line:
                return True
        return False

    def finish(self) -> tuple[int, str, str]:
        """Wait for the end: ``(rc, stdout, all of stderr)``."""
        self.lines.append(self.proc.stderr.read())
        out = self.proc.stdout.read()
        rc = self.proc.wait()
        self._watchdog.cancel()
        assert not self.watchdog_fired, f"hvplug hung and was killed:\n{self.stderr}"
        return rc, out, self.stderr

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def close(self) -> None:
        """Make sure the child is gone (after a failed step of the test)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._watchdog.cancel()
        self.proc.stdout.close()
        self.proc.stderr.close()


def start(command: str, domain: str, info: dict, argv_head=(*CLI, "--debug")) -> Child:
    extra = ["--bus", "scsi"] if command == "attach" else []
    return Child([*argv_head, command, "--domain", domain, *extra,
                  "--connection-info", "-"], info)


def repair_like_reconcile(host, volume) -> bool:
    """What ``hvplug reconcile`` would do about this volume, done to it alone.

    True when there was an orphan secret to remove.
    """
    rc, out, err = run_cli("reconcile", "--dry-run", "--json")
    assert rc in (0, 1) and "Traceback" not in err, (rc, out, err)
    report = json.loads(out)
    mine = [f for f in report["findings"] if f["source"] == volume.usage_id]
    # A killed hvplug may leave an orphan secret, never a disk without one.
    assert all(f["kind"] == "orphan-secret" for f in mine), mine
    assert len(mine) <= 1, mine
    secret = usage_secret(host, volume.usage_id)
    if not mine:
        return False
    assert mine[0]["action"] == "would remove", mine
    if secret is None:  # another run's ``hvplug reconcile`` took it meanwhile
        return True
    assert secret.UUIDString() == mine[0]["secret_uuid"], mine
    conf = secrets.read_config(secret)
    conf.uuid = conf.uuid or secret.UUIDString()
    finding = reconcile._remove_orphan(host, secret, conf, dry_run=False)
    assert finding.ok and finding.action in ("removed", "absent"), finding
    return True


def consistent_state(host, domain: str, volume) -> str:
    """"attached" (disk + its secret) or "gone" (neither); anything else fails."""
    disks = domblklist(domain)
    secret = usage_secret(host, volume.usage_id)
    if not disks:
        assert secret is None, f"orphan secret {secret.UUIDString()} of {volume.usage_id}"
        return "gone"
    assert disks == {"sda": volume.usage_id}, disks
    ref = disk_element(host.domain_xml(domain), "sda").find("source/auth/secret")
    assert ref is not None and host.secret_exists(ref.get("uuid")), "disk without its secret"
    assert secret is not None and secret.UUIDString() == ref.get("uuid")
    return "attached"


def clean_up(host, domain: str, volume, state: str) -> None:
    if state == "attached":
        detach(domain, volume)
    assert domblklist(domain) == {}
    assert usage_secret(host, volume.usage_id) is None
    assert wait_for(lambda: not sessions(volume.tid)), sessions(volume.tid)


def kill_and_check(host, domain, volume, child: Child, record_property) -> str:
    try:
        child.proc.kill()
        rc, _, err = child.finish()
    finally:
        child.close()
    assert rc in (0, -signal.SIGKILL), (rc, err)
    record_property("orphan_repaired", repair_like_reconcile(host, volume))
    state = consistent_state(host, domain, volume)
    record_property("state_after_kill", state)
    clean_up(host, domain, volume, state)
    return state


@pytest.mark.parametrize(("command", "marker"), [
    ("attach", DEFINED), ("attach", CONNECTED), ("attach", ATTACHED),
    ("detach", DETACHED), ("detach", REMOVED),
], ids=["attach-defined-secret", "attach-volume-connected", "attach-attached",
        "detach-detached", "detach-removed-secret"])
def test_sigkill_at_a_logged_step(host, make_guest, make_volume, record_property,
                                  command, marker):
    domain, volume = make_guest(), make_volume()
    if command == "detach":
        attach(domain, volume)
    child = start(command, domain, volume)
    try:
        assert child.until(marker), child.stderr
    except BaseException:
        child.close()
        raise
    state = kill_and_check(host, domain, volume, child, record_property)
    if (command, marker) == ("attach", ATTACHED):
        assert state == "attached"  # the disk was in the domain before the kill
    if command == "detach":
        assert state == "gone"  # the disk had left; reconcile took any orphan secret


@pytest.mark.parametrize(("after", "delay"), [
    ("start", 0.05), ("start", 0.1), ("start", 0.2), ("start", 0.4),
    ("attaching", 0.0), ("attaching", 0.002), ("attaching", 0.005), ("attaching", 0.01),
])
def test_sigkill_after_a_delay(host, make_guest, make_volume, record_property,
                               after, delay):
    """Kills at moments the log does not name, e.g. inside libvirt's attach call."""
    domain, volume = make_guest(), make_volume()
    child = start("attach", domain, volume)
    try:
        if after == "attaching":
            assert child.until("attaching "), child.stderr
        time.sleep(delay)
    except BaseException:
        child.close()
        raise
    kill_and_check(host, domain, volume, child, record_property)


def assert_interrupted(rc: int, out: str, err: str, signame: str, quiet: bool = True) -> None:
    assert rc == 1, (rc, out, err)
    assert f"hvplug: error: {INTERRUPTED.format(signame)}\n" in err, err
    assert "Traceback" not in err, err
    if quiet:
        assert out == "", out  # no success report for what was undone


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_after_volume_connected_rolls_back(host, make_guest, make_volume,
                                                  record_property, signum):
    """Secret defined, disk not yet (or just) added: the attach is undone."""
    domain, volume = make_guest(), make_volume()
    child = start("attach", domain, volume, argv_head=DEBUG_LOG_CLI)
    try:
        assert child.until(CONNECTED), child.stderr
        assert DEFINED in child.stderr
        child.proc.send_signal(signum)
        rc, out, err = child.finish()
    finally:
        child.close()
    if ATTACHED in err and HALF_ATTACHED not in err:
        # This test process was held up so long that the attach had ended
        # before the signal: test_signal_after_attached covers that case.
        assert consistent_state(host, domain, volume) == "attached"
        clean_up(host, domain, volume, "attached")
        pytest.skip("the signal arrived after the attach had completed")
    # The signal lands while libvirt adds the disk (Python runs the handler
    # when that call returns) or just before: either way inside the rollback
    # scope, so the secret goes, and the disk too if it had been added.
    assert_interrupted(rc, out, err, signum.name)
    record_property("half_attached_disk_removed", HALF_ATTACHED in err)
    assert REMOVED in err, err
    assert consistent_state(host, domain, volume) == "gone"
    clean_up(host, domain, volume, "gone")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_after_attached(host, make_guest, make_volume, record_property, signum):
    """After "device sda attached" the attach is committed: a signal changes
    nothing, the command reports success (exit 0) and notes the signal.

    The only other outcome is the few statements between libvirt's return
    and the commit: then the rollback takes the disk out again, exit 1.
    Never half attached, never an "Interrupted" exit with the disk still in.
    """
    domain, volume = make_guest(), make_volume()
    child = start("attach", domain, volume, argv_head=DEBUG_LOG_CLI)
    try:
        assert child.until(ATTACHED), child.stderr
        child.proc.send_signal(signum)
        rc, out, err = child.finish()
    finally:
        child.close()
    assert "Traceback" not in err, err
    state = consistent_state(host, domain, volume)
    record_property("state_after_signal", state)
    record_property("exit_status", rc)
    if rc == 0:
        assert state == "attached", (rc, out, err)
        assert out.startswith(f"Attached to domain '{domain}' as sda"), out
        assert INTERRUPTED.format(signum.name) not in err, err
    elif rc == -signum:  # after main() gave the signals back: the result was printed
        assert state == "attached", (rc, out, err)
    else:
        assert_interrupted(rc, out, err, signum.name)
        assert HALF_ATTACHED in err and REMOVED in err, err
        assert state == "gone"
    clean_up(host, domain, volume, state)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_during_detach_completes_it(host, make_guest, make_volume, signum):
    """A detach is never half done: the signal waits until the secret is gone too."""
    domain, volume = make_guest(), make_volume()
    attach(domain, volume)
    child = start("detach", domain, volume, argv_head=DEBUG_LOG_CLI)
    try:
        assert child.until(DETACHED), child.stderr
        child.proc.send_signal(signum)
        rc, out, err = child.finish()
    finally:
        child.close()
    assert "Traceback" not in err, err
    assert REMOVED in err, err
    # The detach completes, then reports as usual (exit 0, the signal noted).
    assert rc in (0, -signum), (rc, out, err)
    if rc == 0:
        assert out.startswith(f"Detached sda from domain '{domain}'"), out
        assert LATE.format(signum.name) in err, err
    assert consistent_state(host, domain, volume) == "gone"
    clean_up(host, domain, volume, "gone")


def test_dry_run_reconcile_sees_the_orphan_of_a_killed_attach(host, make_guest, make_volume):
    """The reconcile step above is not vacuous: a real orphan is found and removed."""
    domain, volume = make_guest(), make_volume()
    usage = volume.usage_id
    # The secret exactly as an attach killed after "defined secret" leaves it.
    conf = config.LibvirtConfigSecret(
        ephemeral=False, private=True, description=secrets.owned_description(usage),
        usage_type="iscsi", usage_id=usage)
    try:
        with locks.named(locks.secret_lock_name("iscsi", usage), "test: orphan"):
            host.define_secret_xml(conf.to_xml())
        rc, out, _ = run_cli("reconcile", "--dry-run", "--json")
        mine = [f for f in json.loads(out)["findings"] if f["source"] == usage]
        assert [(f["kind"], f["action"], f["ok"]) for f in mine] == [
            ("orphan-secret", "would remove", True)]
        assert mine[0]["secret_uuid"] == usage_secret(host, usage).UUIDString()
        assert rc == 1  # a dry run with something to change
        assert repair_like_reconcile(host, volume) is True
        assert consistent_state(host, domain, volume) == "gone"
    finally:
        leftover = usage_secret(host, usage)
        if leftover is not None:
            leftover.undefine()
