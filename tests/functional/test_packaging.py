"""`pip install .` works from a wheel: templates, console script, sample config.

Builds the wheel, installs it into a fresh venv (dependencies from pip's
cache or the index), and runs the installed code from outside the source
tree, so nothing can be found through the checkout by accident.
"""

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(argv, cwd, **kwargs):
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                            check=False, **kwargs)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps",
         "-q", "-w", str(out), str(REPO)], cwd=out)
    (built,) = out.glob("hvplug-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        cwd=env_dir)
    return env_dir


def test_wheel_ships_the_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "hvplug/xml_templates/guest.xml" in names
    assert "hvplug/cli/main.py" in names
    assert not any(name.startswith("tests/") for name in names)


def test_installed_package_finds_its_templates(installed, tmp_path):
    code = ("import hvplug.templates as t, hvplug; "
            "print(hvplug.__file__); print(t.guest_xml('pkg-test', domain_type='qemu'))")
    out = run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path)
    assert str(installed) in out.splitlines()[0]
    assert "<name>pkg-test</name>" in out and "virtio-scsi" in out


def test_console_script_and_sample_config(installed, tmp_path):
    help_text = run([str(installed / "bin" / "hvplug"), "--help"], cwd=tmp_path)
    for command in ("render", "attach", "detach", "list", "verify"):
        assert command in help_text
    sample = run([str(installed / "bin" / "oslo-config-generator"),
                  "--namespace", "hvplug"], cwd=tmp_path)
    assert "[libvirt]" in sample
    assert "#volume_drivers = iscsi=hvplug.virt.volume.net.LibvirtNetVolumeDriver" in sample
    assert "#connection_uri = qemu:///system" in sample
