"""Fixtures for unit tests: the fake libvirt, a guest, volumes, the CLI."""

import io
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from hvplug import templates
from tests import fakelibvirt

HOST_IQN = "iqn.1993-08.org.example:01:unit"


@pytest.fixture
def fake_libvirt(monkeypatch):
    monkeypatch.setitem(sys.modules, "libvirt", fakelibvirt)
    fakelibvirt.reset()
    yield fakelibvirt
    fakelibvirt.reset()


class RecordingExecutor:
    """Stands in for hvplug.utils.executor.execute: records, then answers.

    ``fail_with`` set to a stderr text makes the next commands fail as the
    real program would (ProcessExecutionError).
    """

    def __init__(self):
        self.calls: list[tuple] = []
        self.files: dict[str, tuple[str, int]] = {}
        self.fail_with: str | None = None

    def __call__(self, *cmd, **kwargs):
        self.calls.append(cmd)
        for arg in cmd:  # what a file named in an argument held, and its mode
            if "file=" in arg:
                path = arg.split("file=")[1].split(",")[0]
                self.files[path] = (Path(path).read_text(), os.stat(path).st_mode & 0o777)
        if self.fail_with is not None:
            from hvplug import exception
            raise exception.ProcessExecutionError(cmd=cmd[0], status=1,
                                                  stderr=self.fail_with)
        return "", ""


@pytest.fixture(autouse=True)
def lock_path(config_fixture, tmp_path):
    """Host-wide locks in a per-test directory, so no test needs /run or root."""
    path = tmp_path / "locks"
    config_fixture.config(group="locks", lock_path=str(path))
    return path


@pytest.fixture(autouse=True)
def fake_execute(monkeypatch):
    """No unit test runs a real command."""
    from hvplug.utils import executor
    recorder = RecordingExecutor()
    monkeypatch.setattr(executor, "execute", recorder)
    return recorder


@pytest.fixture
def host(fake_libvirt, config_fixture):
    from hvplug.virt.host import Host
    config_fixture.config(group="libvirt", iscsi_initiator_name=HOST_IQN)
    h = Host("qemu:///system")
    yield h
    h.close()


@pytest.fixture
def registry(host):
    from hvplug.virt.volume.registry import VolumeDriverRegistry
    return VolumeDriverRegistry(host)


@pytest.fixture
def make_guest(host):
    def make(persistent: bool = False, running: bool = True) -> str:
        name = f"unit-{uuid.uuid4().hex[:8]}"
        xml = templates.guest_xml(name, domain_type="kvm")
        if persistent:
            dom = host.call(lambda conn: conn.defineXML(xml))
            if running:
                dom.create()
        else:
            host.call(lambda conn: conn.createXML(xml, 0))
        return name
    return make


@pytest.fixture
def guest(make_guest):
    return make_guest()


@pytest.fixture
def iscsi_target():
    """A fake iSCSI target on 127.0.0.1 that answers the login probe
    (``tests/fakeiscsitarget.py``; set ``mode`` to change its answer)."""
    from tests.fakeiscsitarget import FakeISCSITarget
    with FakeISCSITarget() as target:
        yield target


@pytest.fixture
def portal(iscsi_target):
    """The fake target's portal, standing in for the target's portal."""
    return iscsi_target.portal


@pytest.fixture
def dead_portal():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"127.0.0.1:{port}"


@pytest.fixture
def make_info(portal):
    def make(chap: bool = True, password: str = "s3cret-pw", **data) -> dict:
        tag = uuid.uuid4().hex[:8]
        info = {"driver_volume_type": "iscsi",
                "data": {"target_portal": portal,
                         "target_iqn": f"iqn.2010-10.org.openstack:volume-{tag}",
                         "target_lun": 1, "volume_id": tag, "access_mode": "rw"},
                "serial": tag}
        if chap:
            info["data"].update(auth_method="CHAP", auth_username=f"user-{tag}",
                                auth_password=password)
        info["data"].update(data)
        return info
    return make


@pytest.fixture
def run_cli(host, capsys, monkeypatch, tmp_path, signal_handlers):
    """``run_cli(*argv, stdin=None) -> (rc, stdout, stderr)``: ``hvplug`` in-process,
    on the fake libvirt, with a config file that sets the unit IQN."""
    from hvplug.cli import main as cli
    conf = tmp_path / "hvplug.conf"
    conf.write_text(f"[libvirt]\niscsi_initiator_name = {HOST_IQN}\n")

    def invoke(*argv, stdin=None):
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        rc = cli.main(["--config-file", str(conf), *argv])
        out, err = capsys.readouterr()
        return rc, out, err
    return invoke


@pytest.fixture
def signal_handlers():
    """Put SIGINT and SIGTERM back as they were (``hvplug`` installs its own), and
    forget the signals and the commit a test left in ``hvplug.utils.interrupts``."""
    import signal

    from hvplug.utils import interrupts
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    interrupts._pending.clear()  # no signal of this test reaches the next one
    interrupts._committed.clear()
