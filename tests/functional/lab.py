"""Lab hosts (tools/lab) for functional tests that need a second libvirt host.

A test module that needs them loads this module as a plugin, and reaches
its helpers through the fixtures (importing it as well would make pytest
warn that it cannot rewrite its asserts)::

    pytest_plugins = ("tests.functional.lab",)

    def test_migrates(lab_host, make_guest):
        ...  # lab_host.uri, lab_host.initiator, lab_host.run("hvplug", ...)

Fixtures:

``lab`` (session)
    The :class:`Lab`: ``lab.up(n)`` makes sure lab hosts 1..n are up and
    returns them; ``lab.run(ARGS)`` runs ``tools/lab ARGS``; ``lab.leftovers()``
    lists what of a lab is on this machine.  At the end of the session it takes the lab down, but only
    when this session brought it up: a lab someone started by hand
    (``tools/lab up``) stays up.
``lab_host`` (function)
    Lab host 1, up (a :class:`LabHost`).
``lab_hosts`` (function)
    Lab hosts 1 and 2, up: the two ends of a migration that does not
    involve this machine's libvirtd.

The lab needs root and the stack (``tools/stack start``): without them the
tests skip, or fail under ``CI=true`` (tests/stack.py).  Guests a test puts
on a lab host are the test's to remove (``LabHost.remove_guest``), even on
failure; ``tools/lab down`` removes whatever is left.
"""

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import stack

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "tools" / "lab"
STATE_DIR = Path("/run/hvplug-lab")
STATE_FILE = STATE_DIR / "state.json"
LINK_PREFIX = "hvlab"
ANCHOR_MARK = b"hvplug-lab:"
TIMEOUT = 120


def run_lab(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``tools/lab ARGS`` as a subprocess (never raises on its exit status)."""
    return subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


@dataclass(frozen=True)
class LabHost:
    """One lab host as ``tools/lab status --json`` describes it."""

    name: str
    address: str
    initiator: str
    uri: str
    peer_address: str  # where the lab host reaches this machine (and tgtd)

    @property
    def index(self) -> int:
        return int(self.name.rsplit("-", 1)[1])

    @property
    def qemu_log_dir(self) -> Path:
        """Where the lab host's virtlogd writes QEMU's logs, seen from this machine."""
        return STATE_DIR / self.name / "var-log-libvirt" / "qemu"

    def run(self, *argv: str, input: str | None = None, timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the lab host (``tools/lab exec``); its CompletedProcess."""
        result = subprocess.run([str(LAB), "exec", self.name, "--", *argv], input=input or "",
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check:
            assert result.returncode == 0, \
                f"on {self.name}: {' '.join(argv)}: rc {result.returncode}\n{result.stderr}"
        return result

    def virsh(self, *args: str, timeout: float = 60) -> str:
        """``virsh -c URI ARGS`` (from this machine) that must succeed; its stdout."""
        result = subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True,
                                text=True, timeout=timeout, check=False)
        assert result.returncode == 0, f"virsh -c {self.uri} {' '.join(args)}: {result.stderr}"
        return result.stdout

    def has_guest(self, name: str) -> bool:
        result = subprocess.run(["virsh", "-c", self.uri, "domstate", name],
                                capture_output=True, text=True, timeout=60, check=False)
        return result.returncode == 0

    def remove_guest(self, name: str) -> None:
        """Destroy and undefine guest ``name`` on the lab host if it is there; drop its log."""
        for args in (("destroy", name), ("undefine", name)):
            subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True,
                           timeout=60, check=False)
        with contextlib.suppress(OSError):
            (self.qemu_log_dir / f"{name}.log").unlink()


def parse_hosts(text: str) -> list[LabHost]:
    return [LabHost(**entry) for entry in json.loads(text)]


class Lab:
    """The lab of this test session: brings it up on demand, down when it was ours."""

    def __init__(self):
        self.owned = False  # this session brought the lab up

    def status(self) -> list[LabHost]:
        """The lab hosts up now (``[]`` when the lab is down)."""
        result = run_lab("status", "--json")
        assert "Traceback" not in result.stderr, result.stderr
        return parse_hosts(result.stdout) if result.stdout.strip() else []

    def up(self, hosts: int = 1) -> list[LabHost]:
        """Lab hosts 1..``hosts``, started if need be."""
        was_up = bool(self.status())
        result = run_lab("up", "--hosts", str(hosts), "--json")
        assert result.returncode == 0, f"tools/lab up --hosts {hosts} failed:\n{result.stderr}"
        if not was_up:
            self.owned = True
        return parse_hosts(result.stdout)[:hosts]

    def down(self) -> None:
        result = run_lab("down")
        self.owned = False
        assert result.returncode == 0, f"tools/lab down failed:\n{result.stderr}"

    # The module's helpers, for test modules that load it with pytest_plugins.
    run = staticmethod(run_lab)
    STATE_DIR, STATE_FILE = STATE_DIR, STATE_FILE

    @staticmethod
    def parse(text: str) -> list[LabHost]:
        return parse_hosts(text)

    @staticmethod
    def state() -> dict:
        return lab_state()

    @staticmethod
    def leftovers() -> list[str]:
        return leftovers()

    @staticmethod
    def processes_in_netns(inode: int) -> list[int]:
        return processes_in_netns(inode)


def leftovers() -> list[str]:
    """What of a lab is on this machine: links hvlab*, anchor processes, the state directory."""
    found = [f"link {name}" for name in os.listdir("/sys/class/net")
             if name.startswith(LINK_PREFIX)]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(f"/proc/{entry}/cmdline").read_bytes().startswith(ANCHOR_MARK):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if stat.rpartition(")")[2].split()[0] not in ("Z", "X"):
                    found.append(f"process {entry}")
    with contextlib.suppress(OSError):
        found += [f"mount {line.split()[4]}"
                  for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if str(STATE_DIR) in line]
    if STATE_DIR.exists():
        found.append(f"directory {STATE_DIR}")
    return found


def processes_in_netns(inode: int) -> list[int]:
    """Live processes in the network namespace ``inode``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if stat.rpartition(")")[2].split()[0] not in ("Z", "X"):
                    pids.append(int(entry))
    return pids


def lab_state() -> dict:
    """tools/lab's state file (root only), for tests that check what it tracks."""
    return json.loads(STATE_FILE.read_text())


def _require_lab() -> None:
    if os.geteuid() != 0:
        stack.missing("tools/lab needs root")
    stack.require_libvirtd()
    stack.require_tgtd()


@pytest.fixture(scope="session")
def lab():
    _require_lab()
    lab = Lab()
    yield lab
    if lab.owned:
        lab.down()
        left = leftovers()
        assert not left, f"left after tools/lab down: {left}"


@pytest.fixture
def lab_host(lab) -> LabHost:
    return lab.up(1)[0]


@pytest.fixture
def lab_hosts(lab) -> list[LabHost]:
    return lab.up(2)

