"""``hvplug --help`` and argument errors load neither oslo.config nor libvirt
(nor lxml, nor the virt/target/drivers layers): each command imports its
own layers when it runs.  Module presence only, never time."""

import json
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
heavy = ("oslo_config", "libvirt", "lxml", "hvplug.virt", "hvplug.target", "hvplug.drivers")
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


def test_disk_buses_are_the_drivers_buses():
    from hvplug.conf.choices import DISK_BUSES
    from hvplug.virt.guest_disks import BUS_PREFIXES
    assert sorted(DISK_BUSES) == sorted(BUS_PREFIXES)
