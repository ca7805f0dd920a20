"""Copy images to and from a real tgtd LUN through qemu-img's own initiator."""

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hvplug import exception
from hvplug.image import iscsi_copy


def _pattern_image(path, size_mib: int, fmt: str) -> bytes:
    raw = path.with_suffix(".raw")
    block = bytes(range(256)) * 4096  # 1 MiB
    with open(raw, "wb") as f:
        f.writelines(block for _ in range(size_mib))
    if fmt == "raw":
        return raw.read_bytes()
    subprocess.run(["qemu-img", "convert", "-O", fmt, str(raw), str(path)], check=True)
    return raw.read_bytes()


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_copy_in_and_out(make_volume, tmp_path, fmt):
    volume = make_volume(size_mib=16)
    source = tmp_path / f"image.{fmt}"
    expected = _pattern_image(source, 8, fmt)
    source = source if fmt != "raw" else source.with_suffix(".raw")
    seen = []
    iscsi_copy.copy_to_volume(str(source), volume["data"], source_format=fmt,
                              progress=seen.append)
    assert seen and seen[-1] == 100.0
    with open(volume.path, "rb") as backing:
        assert backing.read(len(expected)) == expected

    out = tmp_path / f"out.{fmt}"
    iscsi_copy.copy_from_volume(volume["data"], str(out), out_format=fmt)
    raw_out = tmp_path / "out-check.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out), str(raw_out)], check=True)
    data = raw_out.read_bytes()
    assert len(data) == 16 << 20 and data[:len(expected)] == expected


def test_password_is_never_in_argv(make_volume, tmp_path):
    volume = make_volume(size_mib=64)
    source = tmp_path / "image.raw"
    source.write_bytes(os.urandom(1 << 20) * 32)
    password = volume.password.encode()
    leaks, done = [], threading.Event()

    def watch():
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        if password in Path(f"/proc/{pid}/cmdline").read_bytes():
                            leaks.append(pid)
                    except OSError:
                        pass
            time.sleep(0.005)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        iscsi_copy.copy_to_volume(str(source), volume["data"], source_format="raw")
    finally:
        done.set()
        watcher.join()
    assert leaks == []


def test_wrong_password_is_a_clear_error(make_volume, tmp_path):
    volume = make_volume(size_mib=8)
    data = dict(volume["data"], auth_password="not-it")
    source = tmp_path / "image.raw"
    source.write_bytes(b"\0" * 4096)
    with pytest.raises(exception.ProcessExecutionError) as err:
        iscsi_copy.copy_to_volume(str(source), data, source_format="raw")
    assert "Authentication failure" in str(err.value) and "not-it" not in str(err.value)
