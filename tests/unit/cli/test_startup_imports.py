"""``hvplug --help`` and argument errors load neither oslo.config nor libvirt
(nor lxml, nor the virt/target/drivers layers): each command imports its
own layers when it runs.  Module presence only, never time."""

import json
import os
import subprocess
import sys

import pytest

CODE = """
import contextlib, io, json, sys
from hvplug.cli.main import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = ("oslo_config", "libvirt", "lxml", "hvplug.virt", "hvplug.target", "hvplug.drivers",
         "hvplug.initiator", "hvplug.image")
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


@pytest.mark.parametrize(("argv", "code"), [
    (["--help"], 0),
    (["attach", "--help"], 0),
    (["target", "create-export", "--help"], 0),
    (["attach"], 2),  # --domain missing
    (["attach", "--domain", "g", "--bus", "nope"], 2),
    (["no-such-command"], 2),
])
def test_parsing_imports_neither_oslo_config_nor_libvirt(argv, code):
    out = subprocess.run([sys.executable, "-c", CODE, *argv], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert json.loads(out) == {"code": code, "loaded": []}


LOAD_CONFIG = """
import json, sys
from hvplug.cli.main import load_config
load_config([sys.argv[1]])
from hvplug.conf import CONF
values = {"uri": CONF.libvirt.connection_uri}
deferred = ("netaddr", "rfc3986", "stevedore", "pickle", "inspect")
loaded = sorted(m for m in deferred if m in sys.modules)
if len(sys.argv) > 2:  # a host address option: oslo.config checks it with netaddr
    values["san_ip"] = CONF.backend_defaults.san_ip
print(json.dumps({"loaded": loaded, "values": values,
                  "after": sorted(m for m in deferred if m in sys.modules)}))
"""


def _load_config(tmp_path, text: str, *extra: str):
    conf = tmp_path / "hvplug.conf"
    conf.write_text(text)
    result = subprocess.run([sys.executable, "-c", LOAD_CONFIG, str(conf), *extra],
                            capture_output=True, text=True, timeout=60)
    return result


def test_config_loads_without_oslo_configs_rarely_used_imports(tmp_path):
    """oslo.config imports netaddr, rfc3986, stevedore and pickle at the top;
    hvplug defers them until oslo.config uses one."""
    result = _load_config(tmp_path, "[libvirt]\nconnection_uri = test:///default\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"loaded": [], "after": [],
                                         "values": {"uri": "test:///default"}}


@pytest.mark.parametrize(("value", "ok"), [("192.0.2.7", True), ("ise-1.example", True),
                                           ("300.1.1.1", False)])
def test_a_deferred_import_loads_when_oslo_config_needs_it(tmp_path, value, ok):
    result = _load_config(tmp_path, f"[backend_defaults]\nsan_ip = {value}\n", "san_ip")
    if not ok:  # load_config checks every value: oslo.config's error, naming it
        assert result.returncode != 0 and "san_ip" in result.stderr, result.stderr
        return
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["values"]["san_ip"] == value and "netaddr" in report["after"]


def test_disk_buses_are_the_drivers_buses():
    from hvplug.conf.choices import DISK_BUSES
    from hvplug.virt.guest_disks import BUS_PREFIXES
    assert sorted(DISK_BUSES) == sorted(BUS_PREFIXES)


def test_iscsi_transports_are_the_initiators():
    from hvplug.conf.choices import ISCSI_TRANSPORTS
    from hvplug.initiator.hardware import TRANSPORTS
    assert ISCSI_TRANSPORTS == TRANSPORTS


FREEZE = """
import gc, json, sys, time
from hvplug.cli import main as cli
argv = ["--config-file", "/dev/null", "list", "--domain", "nope", "--connect",
        "test:///default"]
how, cli.START_UP_SECONDS = sys.argv[1], float(sys.argv[2])
if how == "process":
    sys.argv[1:] = argv
    rc = cli.main()
else:
    rc = cli.main(argv)
report = {"rc": rc, "frozen": gc.get_freeze_count() > 0, "collecting": gc.isenabled()}
deadline = time.monotonic() + (30 if cli.START_UP_SECONDS < 1 else 0)
while not gc.isenabled() and time.monotonic() < deadline:
    time.sleep(0.01)
report["collecting_later"] = gc.isenabled()  # waited for when START_UP_SECONDS < 1
print(json.dumps(report))
"""


@pytest.mark.parametrize(("how", "start_up", "expected"), [
    ("process", "600", {"frozen": True, "collecting": False}),
    ("process", "0.01", {"frozen": True, "collecting_later": True}),
    ("in-process", "0.01", {"frozen": False, "collecting": True, "collecting_later": True}),
])
def test_only_the_process_own_command_changes_the_garbage_collector(how, start_up, expected):
    """main() of the process's own command runs its start-up with the cyclic
    collector off (back on after START_UP_SECONDS) and freezes its objects
    before the exit, which the OS frees at once; called with argv (a test, a
    wrapper) it leaves the caller's collector alone."""
    out = subprocess.run([sys.executable, "-c", FREEZE, how, start_up], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    report = json.loads(out.splitlines()[-1])
    assert report["rc"] == 1
    assert {key: report[key] for key in expected} == expected


ATTACH_PATH = """
import json, sys
import hvplug.virt.attach, hvplug.virt.volume.net, hvplug.initiator.login_probe
print(json.dumps(sorted(m for m in sys.argv[1:] if m in sys.modules)))
"""


def test_the_attach_path_imports_none_of_the_stdlib_it_does_not_use():
    """What a CLI attach or detach imports: no dataclasses (typing.NamedTuple
    records are a tenth of the cost to define), no hashlib (OpenSSL), uuid,
    subprocess or tempfile until a function needs one."""
    unwanted = ("dataclasses", "hashlib", "_hashlib", "uuid", "platform", "subprocess",
                "tempfile")
    out = subprocess.run([sys.executable, "-c", ATTACH_PATH, *unwanted], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert json.loads(out) == []


QUICK_EXIT = """
import atexit, sys, threading, time
from hvplug.cli import main as cli
how = sys.argv[1]
atexit.register(lambda: print("atexit ran", file=sys.stderr))
if how == "thread":  # still running when main() is done: the exit waits for it
    worker = threading.Thread(target=lambda: (time.sleep(0.2), print("thread done")))
    worker.start()
sys.stdout.write("buffered, no newline")
cli._quick_exit(3)
"""


@pytest.mark.parametrize("how", ["plain", "thread"])
def test_the_command_exit_keeps_its_code_output_atexit_and_threads(how):
    result = subprocess.run([sys.executable, "-c", QUICK_EXIT, how], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 3
    assert result.stdout.startswith("buffered, no newline")
    assert ("thread done" in result.stdout) == (how == "thread")
    assert "atexit ran" in result.stderr


def test_the_command_exit_reports_output_it_could_not_write():
    """stdout's reader gone before the flush: one line naming it, exit 1."""
    read, write = os.pipe()
    os.close(read)
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    result = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom hvplug.cli import main as cli\n"
         "sys.stdout.write('x' * 10)\ncli._quick_exit(0)"],
        stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, env=buffered)
    os.close(write)
    assert result.returncode == 1
    assert result.stderr.strip() == "hvplug: error: could not write the output: Broken pipe"
