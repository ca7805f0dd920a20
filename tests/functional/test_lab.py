"""tools/lab: extra libvirt hosts in network namespaces, and a live migration through one.

The lab host answers at its URI, has its own name, initiator IQN and host
UUID, reaches tgtd on this machine at 10.250.0.1:3260, takes a diskless
guest by live migration and gives it back; ``tools/lab down`` leaves
nothing (no link hvlab*, no process, no mount, no state).  The last test
takes the lab down, and only when this session brought it up.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from tests.functional.helpers import LIBVIRT_URI, host_initiator, virsh, wait_for

pytest_plugins = ("tests.functional.lab",)

KEYS = {"name", "address", "initiator", "uri", "peer_address"}


def test_up_reports_the_host_and_is_idempotent(lab, lab_host):
    assert lab_host.name == "hvplug-lab-1"
    assert lab_host.address == "10.250.0.2"
    assert lab_host.peer_address == "10.250.0.1"
    assert lab_host.uri == "qemu+tcp://10.250.0.2/system"
    assert lab_host.initiator == "iqn.2026-12.org.hvplug.lab:hvplug-lab-1"

    status = lab.run("status", "--json")
    assert status.returncode == 0, status.stderr
    listed = json.loads(status.stdout)
    assert isinstance(listed, list) and listed
    assert all(set(entry) == KEYS for entry in listed)
    assert lab.parse(status.stdout)[0] == lab_host

    # Up again: nothing new, the same hosts, quickly.
    t0 = time.monotonic()
    again = lab.run("up", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == listed
    assert time.monotonic() - t0 < 10

    text = lab.run("status")
    assert text.returncode == 0, text.stderr
    line = next(li for li in text.stdout.splitlines() if li.startswith(lab_host.name))
    for value in (lab_host.address, lab_host.initiator, lab_host.uri, "libvirtd answers"):
        assert value in line

    version = subprocess.run(["virsh", "-c", lab_host.uri, "version"], capture_output=True,
                             text=True, timeout=60, check=False)
    assert version.returncode == 0, version.stderr
    assert "Running hypervisor: QEMU" in version.stdout
    assert lab_host.virsh("hostname").strip() == lab_host.name
    # Its own libvirt host UUID: a migration to it is not "to the same host".
    def host_uuid(capabilities: str) -> str:
        return re.search(r"<host>\s*<uuid>([0-9a-f-]+)</uuid>", capabilities).group(1)
    assert host_uuid(lab_host.virsh("capabilities")) != host_uuid(virsh("capabilities"))
    if lab.owned:  # started clean: none of this machine's guests or secrets
        assert lab_host.virsh("list", "--all", "--name").strip() == ""
        secrets = lab_host.virsh("secret-list").splitlines()[2:]  # after the header
        assert not any(line.strip() for line in secrets), secrets


def test_exec_runs_inside_the_lab_host(lab, lab_host):
    name = lab_host.run("cat", "/etc/iscsi/initiatorname.iscsi", check=True).stdout
    assert f"InitiatorName={lab_host.initiator}" in name.splitlines()
    assert lab_host.initiator != host_initiator()
    assert lab_host.run("hostname", check=True).stdout.strip() == lab_host.name
    addresses = lab_host.run("ip", "-4", "-o", "addr", "show", check=True).stdout
    assert f" {lab_host.address}/24 " in addresses
    # Its exit status passes through.
    assert lab_host.run("sh", "-c", "exit 7").returncode == 7
    # Its own /run (libvirtd's and virtlogd's pid files and sockets): the
    # lab's state directory, there on this machine, is not there inside.
    assert lab.STATE_DIR.is_dir()
    assert lab_host.run("test", "-e", str(lab.STATE_DIR)).returncode == 1


def test_the_lab_host_reaches_tgtd(lab_host, make_volume):
    probe = (f"import socket; socket.create_connection(({lab_host.peer_address!r}, 3260), 5)"
             ".close(); print('connected')")
    result = lab_host.run("python3", "-c", probe)
    assert result.returncode == 0 and "connected" in result.stdout, result.stderr
    if shutil.which("iscsi-ls") is None:
        pytest.skip("iscsi-ls (libiscsi-bin) is not installed: the TCP connection must do")
    volume = make_volume(size_mib=16, chap=False, portal=f"{lab_host.peer_address}:3260")
    # A discovery session from the lab host's address, with its own IQN.
    listed = lab_host.run("iscsi-ls", "-i", lab_host.initiator,
                          f"iscsi://{lab_host.peer_address}:3260", timeout=60)
    assert volume.iqn in listed.stdout, listed.stdout + listed.stderr


def migrate(src_uri: str, guest: str, dest_uri: str, *extra: str) -> float:
    """``virsh migrate --live`` (virsh drives both ends); its wall-clock seconds."""
    t0 = time.monotonic()
    result = subprocess.run(["virsh", "-c", src_uri, "migrate", "--live", guest, dest_uri,
                             *extra], capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, f"{src_uri} -> {dest_uri}: {result.stderr}"
    return elapsed


def domstate(uri: str, guest: str) -> str | None:
    result = subprocess.run(["virsh", "-c", uri, "domstate", guest], capture_output=True,
                            text=True, timeout=60, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def test_live_migration_there_and_back(lab_host, make_guest, request):
    guest = make_guest()  # on this machine; make_guest removes it here
    request.addfinalizer(lambda: lab_host.remove_guest(guest))
    assert domstate(LIBVIRT_URI, guest) == "running"

    # As doc/multi-host.md shows it; --migrateuri is optional (the lab host's
    # qemu.conf names its address as migration_host).
    there = migrate(LIBVIRT_URI, guest, lab_host.uri, "--migrateuri", f"tcp://{lab_host.address}")
    assert domstate(lab_host.uri, guest) == "running"
    assert wait_for(lambda: domstate(LIBVIRT_URI, guest) is None, timeout=10)
    log = lab_host.qemu_log_dir / f"{guest}.log"
    assert "hostname: hvplug-lab-1" in log.read_text()

    # Back without --migrateuri: QEMU here offers this machine's hostname,
    # which the lab host's /etc/hosts maps to peer_address.
    back = migrate(lab_host.uri, guest, LIBVIRT_URI)
    assert domstate(LIBVIRT_URI, guest) == "running"
    assert wait_for(lambda: domstate(lab_host.uri, guest) is None, timeout=10)
    print(f"live migration of {guest}: to {lab_host.name} {there:.2f}s, back {back:.2f}s")


def test_bad_input_is_one_line_and_exit_2(lab):
    for args in (("exec", "no-such-host", "--", "true"), ("up", "--hosts", "0"),
                 ("frobnicate",), ("exec", "hvplug-lab-1")):
        result = lab.run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("lab: error: ")
        assert "Traceback" not in result.stderr


def test_down_leaves_nothing(lab):
    if not lab.owned:
        pytest.skip("the lab was up before this session (started by hand?): it stays up")
    hosts = lab.status()
    assert hosts
    state = lab.state()
    assert os.stat(lab.STATE_FILE).st_mode & 0o777 == 0o600
    assert os.stat(lab.STATE_FILE.parent).st_mode & 0o777 == 0o700
    tracked = [(h["pid"], h["netns"], h["libvirtd_pid"], h["virtlogd_pid"])
               for h in state["hosts"]]

    lab.down()
    assert lab.leftovers() == []
    for pid, netns, libvirtd_pid, virtlogd_pid in tracked:
        assert lab.processes_in_netns(netns) == []
        for gone in (pid, libvirtd_pid, virtlogd_pid):
            assert not is_running(gone)
    assert all(not (lab.STATE_DIR / host.name).exists() for host in hosts)
    status = lab.run("status", "--json")
    assert status.returncode == 1 and status.stdout.strip() == "[]"
    again = lab.run("down")  # nothing to do: still a success
    assert again.returncode == 0, again.stderr


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False
