"""What the functional tests share besides fixtures: the CLI, polling, probes.

Everything here reads state (libvirt, tgtd, files) or runs the ``hvplug``
command as a real subprocess; nothing creates objects that need cleaning up.
"""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from lxml import etree

from hvplug.target.tgtd_ipc import TgtdIPC

CLI = [sys.executable, "-m", "hvplug.cli.main"]
CLI_TIMEOUT = 120
INITIATOR_FILE = Path("/etc/iscsi/initiatorname.iscsi")
LIBVIRT_URI = "qemu:///system"
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")


def run_cli(*args: str, info=None, stdin: str | None = None) -> tuple[int, str, str]:
    """Run ``hvplug ARGS`` and return ``(rc, stdout, stderr)``.

    ``info`` (a connection_info dict) goes through stdin as JSON, with
    ``--connection-info -`` added: a password never appears in an argv.
    """
    argv = [*CLI, *args]
    if info is not None:
        argv += ["--connection-info", "-"]
        stdin = json.dumps(info)
    result = subprocess.run(argv, input=stdin or "", capture_output=True, text=True,
                            timeout=CLI_TIMEOUT, check=False)
    return result.returncode, result.stdout, result.stderr


def run_json(*args: str, info=None) -> dict:
    """``run_cli`` with ``--json`` that must succeed; the parsed output."""
    rc, out, err = run_cli(*args, "--json", info=info)
    assert rc == 0, f"hvplug {' '.join(args)} failed with rc {rc}:\n{err}\n{out}"
    assert "Traceback" not in err, err
    return json.loads(out)


def attach(domain: str, info: dict, *extra: str) -> dict:
    """``hvplug attach --bus scsi --json``, which must succeed."""
    return run_json("attach", "--domain", domain, "--bus", "scsi", *extra, info=info)


def detach(domain: str, info: dict | None = None, dev: str | None = None) -> dict:
    """``hvplug detach --json`` by connection_info or by ``dev``; must succeed."""
    which = ("--dev", dev) if dev else ()
    return run_json("detach", "--domain", domain, *which, info=info)


def wait_for(condition, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``condition()`` until it is truthy (returned) or ``timeout`` passed (falsy)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def host_initiator() -> str:
    """This host's initiator IQN, read as open-iscsi keeps it."""
    for line in INITIATOR_FILE.read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if key.strip() == "InitiatorName":
            return value.strip()
    raise AssertionError(f"no InitiatorName in {INITIATOR_FILE}")


def sessions(tid: int) -> list:
    """tgtd's I_T nexuses (SessionInfo) of target ``tid``; [] if it is gone."""
    target = TgtdIPC().list_targets().get(tid)
    return target.sessions if target else []


def virsh(*args: str) -> str:
    result = subprocess.run(["virsh", "-c", LIBVIRT_URI, *args], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, f"virsh {' '.join(args)}: {result.stderr}"
    return result.stdout


def domblklist(domain: str, inactive: bool = False) -> dict[str, str]:
    """``virsh domblklist`` as {target dev: source}."""
    out = virsh("domblklist", domain, *(["--inactive"] if inactive else []))
    rows = {}
    for line in out.splitlines()[2:]:
        parts = line.split()
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    return rows


def disk_element(domain_xml: str, dev: str):
    """The ``<disk>`` element with target ``dev`` in ``domain_xml``, or None."""
    found = etree.fromstring(domain_xml.encode()).xpath(
        "./devices/disk[target/@dev=$dev]", dev=dev)
    return found[0] if found else None


def disk_alias(domain_xml: str, dev: str) -> str:
    """The qdev id (``<alias name>``) QEMU knows disk ``dev`` by."""
    disk = disk_element(domain_xml, dev)
    assert disk is not None, f"no disk {dev}"
    return disk.find("alias").get("name")


def dead_port() -> int:
    """A 127.0.0.1 TCP port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def usage_secret(host, usage_id: str):
    """The iSCSI secret with ``usage_id``, or None."""
    return host.find_secret("iscsi", usage_id)


def qemu_io(domain: str, qdev: str, command: str, report: bool = True) -> str:
    """Run qemu-io inside the guest's QEMU, on its drive ``qdev``; its report.

    HMP ``qemu-io`` answers nothing on the monitor: qemu-io prints to QEMU's
    stderr, which virtlogd appends to the domain's log.
    """
    log = QEMU_LOG_DIR / f"{domain}.log"
    start = log.stat().st_size
    out = virsh("qemu-monitor-command", domain, "--hmp", f'qemu-io -d {qdev} "{command}"')
    assert not out.strip(), out  # e.g. "Error: Device ... not found"
    if not report:  # e.g. flush, which prints nothing
        return ""

    def new_report():
        text = log.read_bytes()[start:].decode(errors="replace")
        return text if " ops; " in text else ""
    text = wait_for(new_report)
    assert text, f"no qemu-io report for {command!r} in {log}"
    return text
