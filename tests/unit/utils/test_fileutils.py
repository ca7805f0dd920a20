import os
import stat
import threading
import time

import pytest

from hvplug.utils import fileutils


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_private_dir_and_file(tmp_path):
    directory = fileutils.private_dir(tmp_path / "a" / "b")
    assert mode(directory) == 0o700
    os.chmod(directory, 0o755)
    assert mode(fileutils.private_dir(directory)) == 0o700
    target = directory / "secret.conf"
    fileutils.write_private_file(target, "incominguser u p\n")
    fileutils.write_private_file(target, "incominguser u q\n")
    assert target.read_text() == "incominguser u q\n" and mode(target) == 0o600
    assert os.listdir(directory) == ["secret.conf"]  # no temporary file left


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f"
    fileutils.write_private_file(target, "old")

    def broken(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        fileutils.write_private_file(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f"]


def test_locked_serialises_threads(tmp_path):
    inside, overlaps = [], []

    def work():
        with fileutils.locked(tmp_path / ".lock"):
            if inside:
                overlaps.append(1)
            inside.append(1)
            time.sleep(0.01)
            inside.pop()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and mode(tmp_path / ".lock") == 0o600
