"""iface records through the real iscsiadm of this machine.

Only records named ``hvplug-test-<hex>`` made here are touched, and each is
deleted in a finalizer even when the test fails.  Record create/show/list/
delete work without kernel modules; ``-o update`` needs the record's kernel
transport (``iscsi_tcp``), so where it is not loaded the tests assert the
clear failure hvplug reports instead.  Offload hardware, discovery and login
cannot be tested here (doc/offload-and-iser.md says how to check them on a
real host).
"""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hvplug import exception
from hvplug.initiator.iface import IfaceManager
from tests import stack
from tests.fakeiscsiadm import FakeIscsiadm
from tests.fakesysfs import FakeSysfs

IFACES_DIR = Path("/etc/iscsi/ifaces")
MAC = "00:07:43:28:b2:58"


@pytest.fixture
def manager():
    if shutil.which("iscsiadm") is None:
        stack.missing("iscsiadm not installed (Debian package open-iscsi)")
    return IfaceManager()


@pytest.fixture
def record_name(manager):
    """A unique record name; whatever record of that name exists at the end is deleted."""
    name = f"hvplug-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["iscsiadm", "-m", "iface", "-I", name, "-o", "delete"],
                   capture_output=True, check=False, timeout=30)
    assert not (IFACES_DIR / name).exists()


def tcp_loaded() -> bool:
    return Path("/sys/class/iscsi_transport/tcp").is_dir()


def test_create_show_list_update_delete(manager, record_name):
    created = manager.create(record_name, "tcp")
    assert created.name == record_name and (IFACES_DIR / record_name).is_file()
    shown = manager.show(record_name)
    assert (shown.transport, shown.hwaddress, shown.ipaddress) == ("tcp", None, None)
    assert shown.record["iface.iscsi_ifacename"] == record_name
    assert record_name in [iface.name for iface in manager.list()]
    assert manager.unusable_reason(record_name) is None
    if tcp_loaded():
        assert manager.update(record_name, ipaddress="192.0.2.10").ipaddress == "192.0.2.10"
        assert manager.show(record_name).ipaddress == "192.0.2.10"
    else:
        with pytest.raises(exception.IfaceCommandFailed) as err:
            manager.update(record_name, ipaddress="192.0.2.10")
        assert "Cound not locate transport" in err.value.message  # iscsiadm's spelling
        assert "modprobe iscsi_tcp" in err.value.message
        assert manager.show(record_name).ipaddress is None
    with pytest.raises(exception.IfaceConflict):  # `-o new` would have reset it
        manager.create(record_name, "tcp")
    assert manager.delete(record_name) is True
    assert manager.show(record_name) is None and not (IFACES_DIR / record_name).exists()
    assert manager.delete(record_name) is False


def test_a_failed_create_leaves_no_record(manager, record_name):
    if tcp_loaded():
        assert manager.ensure_iface("tcp", MAC, name=record_name) == record_name
        assert manager.show(record_name).hwaddress == MAC
        return
    with pytest.raises(exception.IfaceCommandFailed) as err:
        manager.ensure_iface("tcp", MAC, name=record_name)
    assert "The half-written record was removed." in err.value.message
    assert manager.show(record_name) is None and not (IFACES_DIR / record_name).exists()


def test_the_builtin_records(manager):
    names = [iface.name for iface in manager.list()]
    assert names[-2:] == ["default", "iser"]
    assert manager.show("default").transport == "tcp"
    assert manager.unusable_reason("default") is None


def hvplug(tmp_path, *argv):
    conf = tmp_path / "hvplug.conf"
    conf.write_text("")
    return subprocess.run([sys.executable, "-m", "hvplug.cli.main", "--config-file", str(conf),
                           "iface", *argv], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


def test_cli_dry_run_create_on_this_machine(manager, tmp_path):
    result = hvplug(tmp_path, "create", "--transport", "cxgb4i", "--hwaddress", MAC, "--dry-run")
    assert result.returncode == 1, result.stderr
    assert f"iscsiadm -m iface -I cxgb4i.{MAC} -o new" in result.stdout
    assert f"No cxgb4i hardware for {MAC} on this host" in result.stderr
    assert "Traceback" not in result.stderr
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.add_iscsi_host(5, "cxgb4i", MAC)
    result = hvplug(tmp_path, "create", "--transport", "cxgb4i", "--hwaddress", MAC,
                    "--dry-run", "--sysfs-root", str(sysfs.root))
    assert result.returncode == 0, result.stderr
    assert "hardware: iscsi_host host5 (cxgb4i)" in result.stdout
    assert not (IFACES_DIR / f"cxgb4i.{MAC}").exists()  # a dry run wrote nothing


def answer(execute, *args):
    try:
        out, err = execute("iscsiadm", *args, timeout=30.0)
        return 0, out, err.strip().splitlines()[-1:]
    except exception.ProcessExecutionError as exc:
        return exc.kwargs["status"], exc.kwargs.get("stdout") or "", exc.stderr.splitlines()[-1:]


def test_the_fake_answers_iface_commands_like_the_real_iscsiadm(manager, record_name):
    """Same commands to both: same status, same stdout, same last stderr line."""
    from hvplug.utils import executor
    fake = FakeIscsiadm(kernel_transports=("tcp",) if tcp_loaded() else ())
    for args in (["-o", "show"], ["-o", "delete"], ["-o", "update", "-n", "iface.ipaddress",
                                                  "-v", "192.0.2.10"],
                 ["-o", "new"], ["-o", "show"], ["-o", "new"],
                 ["-o", "update", "-n", "iface.ipaddress", "-v", "192.0.2.10"],
                 [], ["-o", "delete"], ["-o", "show"]):
        cmd = ("-m", "iface", "-I", record_name, *args)
        assert answer(fake, *cmd) == answer(executor.execute, *cmd), cmd
    real = answer(executor.execute, "-m", "iface", "-I", "default", "-o", "show")
    assert answer(fake, "-m", "iface", "-I", "default", "-o", "show") == real
