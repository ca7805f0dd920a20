"""A CHAP password handed to hvplug stays secret on the real stack.

It goes in through stdin only, and must then appear nowhere a local user
could read it: not in hvplug's output (even with --debug), not in libvirt's
XML, not in any process's argv (hvplug, virsh, QEMU, ...), and not in any
world-readable file of libvirt's.  libvirt itself keeps the value in
/etc/libvirt/secrets/<uuid>.base64, mode 0600.
"""

import base64
import contextlib
import os
import stat
import threading
from pathlib import Path

import pytest

from tests.functional.helpers import (
    CLI,
    run_cli,
    usage_secret,
)

LIBVIRT_DIRS = ("/etc/libvirt", "/var/lib/libvirt", "/var/run/libvirt", "/run/libvirt",
                "/var/log/libvirt")
SECRETS_DIR = Path("/etc/libvirt/secrets")
MAX_SCANNED = 64 << 20  # bytes; libvirt's own files are far smaller


def forms(password: str) -> list[bytes]:
    """The plaintext and the base64 libvirt stores it as."""
    return [password.encode(), base64.b64encode(password.encode())]


def files_containing(needles: list[bytes]) -> dict[str, int]:
    """Every regular file under LIBVIRT_DIRS holding a needle: {path: mode}."""
    found, seen = {}, set()
    for top in LIBVIRT_DIRS:
        for root, _, names in os.walk(top):
            for name in names:
                path = os.path.join(root, name)
                with contextlib.suppress(OSError):  # files come and go meanwhile
                    info = os.lstat(path)
                    real = os.path.realpath(path)
                    if (not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SCANNED
                            or real in seen):
                        continue
                    seen.add(real)
                    with open(path, "rb") as f:
                        data = f.read()
                    if any(needle in data for needle in needles):
                        found[real] = stat.S_IMODE(info.st_mode)
    return found


def processes_with(needles: list[bytes]) -> list[str]:
    """``pid: argv`` of every process whose command line holds a needle."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read()
            if any(needle in argv for needle in needles):
                found.append(f"{pid}: {argv!r}")
    return found


@contextlib.contextmanager
def argv_watch(needles: list[bytes]):
    """Scan every process's argv, over and over, while the block runs."""
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            seen.extend(processes_with(needles))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join()


def assert_not_in(text: str, needles: list[bytes], where: str) -> None:
    for needle in needles:
        assert needle.decode() not in text, f"the CHAP password is in {where}"


def assert_files_private(needles: list[bytes]) -> dict[str, int]:
    found = files_containing(needles)
    readable = {path: oct(mode) for path, mode in found.items() if mode & stat.S_IROTH}
    assert readable == {}, f"world-readable files hold the CHAP password: {readable}"
    return found


def qemu_pid(domain: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text().strip())


@pytest.mark.parametrize("output", [["--json"], []], ids=["json", "text"])
def test_password_stays_secret(host, make_guest, make_volume, output):
    domain, volume = make_guest(), make_volume()
    needles = forms(volume.password)
    argv = [*CLI, "--debug", "attach", "--domain", domain, "--bus", "scsi", *output,
            "--connection-info", "-"]
    assert_not_in(" ".join(argv), needles, "hvplug's argv")

    with argv_watch(needles) as seen:
        rc, out, err = run_cli("--debug", "attach", "--domain", domain, "--bus", "scsi",
                               *output, info=volume)
        assert rc == 0, err
        rc2, out2, err2 = run_cli("--debug", "list", "--domain", domain, *output)
        rc3, out3, err3 = run_cli("--debug", "verify", "--domain", domain, *output)
    assert (rc2, rc3) == (0, 0), (err2, err3)
    assert seen == [], "a process had the CHAP password in its argv"
    assert "DEBUG" in err, "--debug should have logged something"
    for where, text in (("attach stdout", out), ("attach stderr", err),
                        ("list output", out2 + err2), ("verify output", out3 + err3)):
        assert_not_in(text, needles, where)

    secret = usage_secret(host, volume.usage_id)
    uuid = secret.UUIDString()
    assert_not_in(secret.XMLDesc(0), needles, "the secret's XML")
    secure = host.libvirt.VIR_DOMAIN_XML_SECURE
    for flags in (0, secure):
        xml = host.domain_call(domain, lambda dom, f=flags: dom.XMLDesc(f))
        assert uuid in xml
        assert_not_in(xml, needles, "the domain's live XML")
    pid = qemu_pid(domain)
    for part in ("cmdline", "environ"):
        data = Path(f"/proc/{pid}/{part}").read_bytes()
        assert_not_in(data.decode(errors="replace"), needles, f"QEMU's /proc/{pid}/{part}")
    assert processes_with(needles) == []

    found = assert_files_private(needles)
    value_file = SECRETS_DIR / f"{uuid}.base64"
    assert str(value_file) in found, f"libvirt stores the value elsewhere: {found}"
    assert stat.S_IMODE(value_file.stat().st_mode) == 0o600

    with argv_watch(needles) as seen:
        rc, out, err = run_cli("--debug", "detach", "--domain", domain, *output,
                               info=volume)
    assert rc == 0, err
    assert seen == []
    assert_not_in(out + err, needles, "detach output")
    assert not value_file.exists()
    assert assert_files_private(needles) == {}


def test_failed_attach_keeps_the_password_secret(host, make_guest, make_volume):
    """Even the error path (wrong password, --debug traceback) prints neither."""
    domain, volume = make_guest(), make_volume()
    wrong = dict(volume, data=dict(volume["data"], auth_password="wrong-" + volume.password))
    needles = forms(volume.password) + forms(wrong["data"]["auth_password"])
    with argv_watch(needles) as seen:
        rc, out, err = run_cli("--debug", "attach", "--domain", domain, "--bus", "scsi",
                               "--json", info=wrong)
    assert rc == 1, err
    assert seen == []
    assert "Traceback" in err, "--debug shows the traceback"
    assert_not_in(out + err, needles, "the failed attach's output")
    assert usage_secret(host, volume.usage_id) is None
    assert assert_files_private(needles) == {}


def test_render_prints_no_password(make_volume):
    volume = make_volume()
    needles = forms(volume.password)
    for extra in (["--json"], [], ["--debug", "--json"]):
        rc, out, err = run_cli("render", "--bus", "scsi", *extra, info=volume)
        assert rc == 0, err
        assert volume.username in out and volume.usage_id in out
        assert_not_in(out + err, needles, f"render {' '.join(extra)} output")

