"""Encrypted volumes with QEMU's native LUKS, against the real stack.

A tgtd LUN is formatted with ``qemu-img create -f luks`` straight over
iSCSI (CHAP on), then attached through ``hvplug attach --passphrase-file``:
QEMU decrypts it, so the guest sees the plaintext size and data while the
backing file holds only ciphertext.  A wrong passphrase fails cleanly; a
detach releases the CHAP and the passphrase secret; the passphrase never
shows in an output, a log, an argv or a world-readable file.
"""

import base64
import json
import os
import secrets
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from tests.functional.helpers import (
    CLI,
    CLI_TIMEOUT,
    QEMU_LOG_DIR,
    attach,
    detach,
    disk_alias,
    domblklist,
    qemu_io,
    run_cli,
    usage_secret,
    virsh,
)

ITER_TIME_MS = 50  # each unlock of the test volumes costs ~50 ms, not LUKS's 2 s
# qemu-img times PBKDF2 by the thread's CPU time before it formats; a round
# that took less than one clock tick makes it give up with this: try again.
PBKDF_FLAKE = "Unable to get accurate CPU usage"
PBKDF_TRIES = 5
PATTERN = 0x5A
WRITTEN = 64 << 10
# Where a leaked passphrase could land in a file others may read.
SCANNED_DIRS = [Path("/etc/libvirt"), Path("/run/libvirt"), Path("/var/lib/libvirt/qemu"),
                Path("/var/log/libvirt"), Path("/run/hvplug"), Path("/tmp")]
SCANNED_MAX = 1 << 20


def private_file(path: Path, content: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return path


def chap_env(volume) -> dict:
    """libiscsi takes CHAP credentials from its environment: none in argv."""
    return dict(os.environ, LIBISCSI_CHAP_USERNAME=volume.username,
                LIBISCSI_CHAP_PASSWORD=volume.password)


def qemu_luks(volume, passfile: Path, *command: str) -> subprocess.CompletedProcess:
    """``command`` (qemu-img or qemu-io, with its options) on the LUN's LUKS
    layer, over iSCSI with CHAP; the passphrase from ``passfile``, the CHAP
    password from a 0600 file beside it."""
    chapfile = passfile.with_name(passfile.name + ".chap")
    if not chapfile.exists():
        private_file(chapfile, volume.password.encode())
    opts = (f"driver=luks,key-secret=sec0,file.driver=iscsi,file.transport=tcp,"
            f"file.portal=127.0.0.1:3260,file.target={volume.iqn},file.lun={volume.lun},"
            f"file.user={volume.username},file.password-secret=chap")
    argv = [*command, "--object", f"secret,id=sec0,file={passfile}",
            "--object", f"secret,id=chap,file={chapfile}", "--image-opts", opts]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def luks_volume(host, make_volume, tmp_path):
    """Factory: a CHAP volume formatted as LUKS over iSCSI; (volume, passphrase,
    passphrase file).  Passphrase secrets of its volume id go after the test."""
    made = []

    def make(size_mib: int = 32):
        volume = make_volume(size_mib=size_mib)
        made.append(volume)
        passphrase = f"hvplug-test-luks-{secrets.token_hex(12)}".encode()
        passfile = private_file(tmp_path / f"pass-{volume['serial']}", passphrase)
        url = f"iscsi://127.0.0.1:3260/{volume.iqn}/{volume.lun}"
        for _ in range(PBKDF_TRIES):
            result = subprocess.run(
                ["qemu-img", "create", "-f", "luks", "--object",
                 f"secret,id=sec0,file={passfile}", "-o",
                 f"key-secret=sec0,iter-time={ITER_TIME_MS}", url,
                 str(volume.size - (4 << 20))],
                capture_output=True, text=True, timeout=120, check=False,
                env=chap_env(volume))
            if PBKDF_FLAKE not in result.stderr:
                break
        assert result.returncode == 0, result.stderr
        volume["data"]["encrypted"] = True
        return volume, passphrase, passfile

    yield make
    for volume in made:
        secret = host.find_secret("volume", volume["serial"])
        if secret is not None:
            secret.undefine()


def luks_info(volume, passfile: Path) -> dict:
    result = qemu_luks(volume, passfile, "qemu-img", "info", "--output=json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class ArgvWatch:
    """Every process's argv, read again and again while it runs: what held ``needle``."""

    def __init__(self, needles: list[bytes]):
        self.needles, self.hits = needles, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def scan(self) -> None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if any(needle in argv for needle in self.needles):
                self.hits.append(argv.replace(b"\0", b" ")[:200])

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.scan()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.scan()


def world_readable_files_holding(needles: list[bytes]) -> list[str]:
    found = []
    for top in SCANNED_DIRS:
        for root, _, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                    if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IROTH:
                        continue
                    with open(path, "rb") as f:
                        data = f.read(SCANNED_MAX)
                except OSError:
                    continue
                if any(needle in data for needle in needles):
                    found.append(path)
    return found


def needles_of(passphrase: bytes) -> list[bytes]:
    return [passphrase, base64.b64encode(passphrase)]


def run_cli_watched(watch_for: list[bytes], *args: str, info=None) -> tuple[int, str, str]:
    """``run_cli`` with every process's argv watched while the command runs."""
    with ArgvWatch(watch_for) as watch:
        proc = subprocess.Popen([*CLI, *args, "--connection-info", "-"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(json.dumps(info), timeout=CLI_TIMEOUT)
    assert watch.hits == [], watch.hits
    return proc.returncode, out, err


def test_encrypted_attach_data_and_release(host, make_guest, luks_volume):
    domain = make_guest()
    volume, passphrase, passfile = luks_volume()
    needles = needles_of(passphrase)
    luks = luks_info(volume, passfile)
    payload_offset = luks["format-specific"]["data"]["payload-offset"]
    assert luks["virtual-size"] == volume.size - payload_offset

    rc, out, err = run_cli_watched(
        needles, "--debug", "attach", "--domain", domain, "--bus", "scsi", "--json",
        "--passphrase-file", str(passfile), info=volume)
    assert rc == 0, err
    assert passphrase.decode() not in out + err
    result = json.loads(out)
    dev = result["dev"]
    assert domblklist(domain) == {dev: volume.usage_id}

    # The disk: <encryption format='luks'> inside <source>, on the passphrase secret.
    passphrase_secret = host.find_secret("volume", volume["serial"])
    chap_secret = usage_secret(host, volume.usage_id)
    assert passphrase_secret is not None and chap_secret is not None
    assert chap_secret.UUIDString() == result["secret_uuid"]
    live = host.domain_xml(domain)
    assert (f"<secret type='passphrase' uuid='{passphrase_secret.UUIDString()}'/>"
            in live.replace('"', "'"))
    secret_xml = passphrase_secret.XMLDesc(0)
    assert "private='yes'" in secret_xml and "ephemeral='no'" in secret_xml
    assert "<description>hvplug-owned: " in secret_xml
    with pytest.raises(host.libvirt.libvirtError):
        passphrase_secret.value()

    # QEMU decrypts: the guest sees the plaintext size, smaller than the LUN by
    # the LUKS header.
    capacity = host.block_capacity(domain, dev)
    assert capacity == volume.size - payload_offset < volume.size
    assert f"Capacity:       {capacity}\n" in virsh("domblkinfo", domain, dev)

    # Plaintext written through QEMU reads back through QEMU...
    qdev = disk_alias(live, dev)
    report = qemu_io(domain, qdev, f"write -P {PATTERN:#x} 0 {WRITTEN}")
    assert f"wrote {WRITTEN}/{WRITTEN} bytes at offset 0" in report, report
    qemu_io(domain, qdev, "flush", report=False)
    report = qemu_io(domain, qdev, f"read -P {PATTERN:#x} 0 {WRITTEN}")
    assert "Pattern verification failed" not in report, report
    # ...while the target's backing file holds the LUKS header and ciphertext only.
    data = volume.path.read_bytes()
    assert data[:6] == b"LUKS\xba\xbe"
    assert bytes([PATTERN]) * 512 not in data
    assert data[payload_offset:payload_offset + WRITTEN] != bytes(WRITTEN)  # it was written

    # Nothing leaked: not in any argv (QEMU's included), log or file others may read.
    watch = ArgvWatch(needles)
    watch.scan()
    assert watch.hits == []
    assert not any(needle in (QEMU_LOG_DIR / f"{domain}.log").read_bytes()
                   for needle in needles)
    assert world_readable_files_holding(needles) == []

    uuids = (passphrase_secret.UUIDString(), chap_secret.UUIDString())
    detached = detach(domain, volume)
    assert detached["dev"] == dev and domblklist(domain) == {}
    assert not any(host.secret_exists(uuid) for uuid in uuids)

    # The data is the volume's, encrypted with that passphrase: qemu-io reads
    # the plaintext from the LUN with it, after the guest let go.
    result = qemu_luks(volume, passfile, "qemu-io", "-r", "-c",
                       f"read -P {PATTERN:#x} 0 {WRITTEN}")
    assert result.returncode == 0 and "Pattern verification failed" not in result.stdout, (
        result.stdout, result.stderr)
    assert f"read {WRITTEN}/{WRITTEN} bytes" in result.stdout


def test_wrong_passphrase_fails_cleanly(host, make_guest, luks_volume, tmp_path):
    domain = make_guest()
    volume, passphrase, _ = luks_volume()
    wrong = f"hvplug-test-wrong-{secrets.token_hex(8)}".encode()
    wrongfile = private_file(tmp_path / "wrong", wrong)
    before = host.domain_xml(domain)

    rc, out, err = run_cli_watched(
        needles_of(wrong) + needles_of(passphrase), "attach", "--domain", domain,
        "--bus", "scsi", "--passphrase-file", str(wrongfile), info=volume)
    assert rc == 1, (out, err)
    assert "Traceback" not in err
    assert "the passphrase unlocks none of its LUKS key slots" in err
    assert "Nothing was left behind." in err
    assert wrong.decode() not in out + err
    assert domblklist(domain) == {}
    assert host.domain_xml(domain) == before
    assert host.find_secret("volume", volume["serial"]) is None
    assert usage_secret(host, volume.usage_id) is None


def test_encrypted_without_a_key_and_key_for_a_plain_volume(host, make_guest, make_volume,
                                                            luks_volume, tmp_path):
    domain = make_guest()
    volume, _, passfile = luks_volume()
    rc, _, err = run_cli("attach", "--domain", domain, "--bus", "scsi", info=volume)
    assert rc == 2, err
    assert "--passphrase-file" in err and "[libvirt] volume_key_dir" in err
    plain = make_volume()
    rc, _, err = run_cli("attach", "--domain", domain, "--bus", "scsi",
                         "--passphrase-file", str(passfile), info=plain)
    assert rc == 2 and "not encrypted" in err, err
    assert domblklist(domain) == {}
    assert host.find_secret("volume", volume["serial"]) is None
    assert usage_secret(host, volume.usage_id) is None
    assert usage_secret(host, plain.usage_id) is None


def test_key_dir_and_render(host, make_guest, luks_volume, tmp_path):
    """[libvirt] volume_key_dir: a 0600 file per volume id; render shows
    both secrets' XML and never a value."""
    domain = make_guest()
    volume, passphrase, _ = luks_volume()
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    private_file(keys / volume["serial"], passphrase)
    conf = tmp_path / "hvplug.conf"
    conf.write_text(f"[libvirt]\nvolume_key_dir = {keys}\n")

    rc, out, err = run_cli("--config-file", str(conf), "render", "--json", info=volume)
    assert rc == 0, err
    rendered = json.loads(out)
    assert "<usage type=\"volume\">" in rendered["encryption_secret_xml"]
    assert "<encryption format=\"luks\">" in rendered["disk_xml"]
    assert passphrase.decode() not in out

    result = attach(domain, volume, "--config-file", str(conf))
    assert host.block_capacity(domain, result["dev"]) < volume.size
    detach(domain, volume)
    assert host.find_secret("volume", volume["serial"]) is None
    assert usage_secret(host, volume.usage_id) is None
