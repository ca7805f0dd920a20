"""The ISE flow through the CLI against the simulator, with a real guest.

create → connection-info → hvplug attach → QEMU writes → detach → snapshot →
volume from snapshot → clone → extend → copy image in and out → delete; the
data is checked at every hand-off, and nothing is left on the simulated
array or in tgtd.
"""

import json
import subprocess

import pytest

from hvplug.target.tgtd_ipc import TgtdIPC
from tests import stack
from tests.functional.helpers import (
    CLI,
    attach,
    detach,
    disk_alias,
    qemu_io,
)
from tests.unit.drivers.xio import SimulatedISE, write_config

PATTERN_OFFSET, PATTERN_LEN = 2 << 20, 1 << 20


@pytest.fixture
def ise(tmp_path):
    stack.require_tgtd()
    from ise_sim.iscsi import TgtdExporter
    sim = SimulatedISE(tmp_path / "ise", exporter_factory=TgtdExporter).start()
    yield sim
    try:
        sim.admin("reset", all=1)
    finally:
        sim.stop()


@pytest.fixture
def volume_cli(ise, tmp_path):
    conf = write_config(tmp_path / "hvplug.conf", ise.port, ise_request_timeout=10)
    conf.chmod(0o600)

    def run(*args: str) -> dict | str:
        result = subprocess.run([*CLI, "--config-file", str(conf), "volume", "--backend",
                                 "ise1", *args, "--json"],
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, f"volume {args}: {result.stderr}"
        assert "Traceback" not in result.stderr
        run.stderr = result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else ""
    return run


def _read(path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_ise_volume_lifecycle_with_a_guest(host, make_guest, volume_cli, ise, tmp_path):
    volume_cli("create", "vol1", "--size", "1")
    info = volume_cli("connection-info", "vol1")
    assert info["driver_volume_type"] == "iscsi" and isinstance(info["data"]["target_lun"], int)

    domain = make_guest()
    dev = attach(domain, info)["dev"]
    qdev = disk_alias(host.domain_xml(domain), dev)
    report = qemu_io(domain, qdev, f"write -P 0x3c {PATTERN_OFFSET} {PATTERN_LEN}")
    assert f"wrote {PATTERN_LEN}/{PATTERN_LEN}" in report, report
    qemu_io(domain, qdev, "flush", report=False)
    detach(domain, info)
    volume_cli("terminate-connection", "vol1")

    volume_cli("snapshot-create", "vol1", "snap1")
    volume_cli("create-from-snapshot", "snap1", "vol2")
    volume_cli("clone", "vol1", "vol3")
    volume_cli("extend", "vol2", "--size", "2")
    stats = volume_cli("stats")
    assert stats["vendor_name"] == "X-IO"

    for name in ("vol2", "vol3"):
        out = tmp_path / f"{name}.raw"
        volume_cli("copy-to-image", name, str(out))
        assert _read(out, PATTERN_OFFSET, PATTERN_LEN) == b"\x3c" * PATTERN_LEN
    assert (tmp_path / "vol2.raw").stat().st_size == 2 << 30

    image = tmp_path / "in.raw"
    with open(image, "wb") as f:
        f.truncate(1 << 30)
        f.seek(0)
        f.write(b"\x5e" * 65536)
    volume_cli("copy-image", str(image), "vol3")
    assert "copy: 100%" in volume_cli.stderr  # progress on stderr, stdout stays JSON
    volume_cli("copy-to-image", "vol3", str(tmp_path / "vol3-again.qcow2"), "--format", "qcow2")
    check = tmp_path / "vol3-check.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(tmp_path / "vol3-again.qcow2"),
                    str(check)], check=True)
    assert _read(check, 0, 65536) == b"\x5e" * 65536

    for name in ("vol3", "vol2", "snap1", "vol1"):
        volume_cli("delete", name)
    state = ise.state()
    assert state["volumes"] == {} and state["hosts"] == {} and state["allocations"] == {}
    exported = {t.iqn for t in TgtdIPC().list_targets().values()}
    assert ise.array.iqn not in exported  # nothing left in tgtd either
