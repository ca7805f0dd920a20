"""Every Python tool under tools/ starts from a plain system python.

A newcomer runs ``python3 tools/bench/scale.py --help`` (or the tool
itself, through its ``#!/usr/bin/env python3`` line) without activating
anything.  Each tool that needs hvplug re-runs itself with the project's
venv (tools/hvplug_venv.py), so ``--help`` works there; without any venv
it says in one line how to create it and exits 2.  Never a traceback.

The tools are found, not listed: every file under tools/ with a python
shebang, so a new tool is covered the day it is added.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
NEEDS = ("hvplug", "oslo_config", "libvirt", "lxml")


def python_tools() -> list[Path]:
    found = []
    for path in sorted(TOOLS.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        with open(path, "rb") as f:
            first = f.readline()
        if first.startswith(b"#!") and b"python" in first:
            found.append(path)
    return found


TOOL_PATHS = python_tools()


def system_python() -> str:
    """A python3 outside any venv: the one a newcomer's shell finds."""
    for directory in ("/usr/bin", "/usr/local/bin", "/bin"):
        candidate = shutil.which("python3", path=directory)
        if candidate:
            return candidate
    pytest.skip("no system python3 in /usr/bin, /usr/local/bin or /bin")


def plain_env(**extra: str) -> dict:
    """No venv on PATH, no VIRTUAL_ENV, no PYTHONPATH: a fresh login shell."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "HOME": os.environ.get("HOME", "/root")}
    env.update(extra)
    return env


def run_help(tool: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([system_python(), str(tool), "--help"], cwd="/", env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_tools_are_found():
    names = {str(p.relative_to(TOOLS)) for p in TOOL_PATHS}
    assert {"demo.py", "gen-config-doc", "ise-simulator", "bench/attach_detach.py",
            "bench/cli_startup.py", "bench/copy_image.py", "bench/render_portals.py",
            "bench/scale.py", "bench/tgt_exports.py"} <= names
    assert "hvplug_venv.py" not in names  # a helper, not a tool


@pytest.mark.parametrize("tool", TOOL_PATHS, ids=lambda p: str(p.relative_to(TOOLS)))
def test_help_works_from_the_system_python(tool):
    # The venv running these tests is the project's venv: the tools find it.
    venv = {"HVPLUG_VENV": sys.prefix} if sys.prefix != sys.base_prefix else {}
    result = run_help(tool, plain_env(**venv))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    assert result.stdout.startswith("usage:"), output


def _system_python_has_everything() -> bool:
    check = "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None " \
            f"for m in {NEEDS!r}))"
    return subprocess.run([system_python(), "-c", check], env=plain_env(),
                          capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize("tool", TOOL_PATHS, ids=lambda p: str(p.relative_to(TOOLS)))
def test_without_a_venv_one_line_says_how(tool, tmp_path):
    if _system_python_has_everything():
        pytest.skip("the system python imports hvplug and its dependencies itself")
    missing_venv = tmp_path / "no-venv-here"
    result = run_help(tool, plain_env(HVPLUG_VENV=str(missing_venv)))
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    if result.returncode == 0:  # needs no venv for --help: nothing to say
        assert result.stdout.startswith("usage:"), output
        return
    assert result.returncode == 2, output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, output
    assert "tools/bootstrap --venv-only" in lines[0] and str(missing_venv) in lines[0]
    assert lines[0].startswith(f"{tool.name}: ")


def test_cli_startup_against_an_unknown_revision_is_exit_2_naming_it():
    """Checked before anything is set up (and before the root check)."""
    venv = {"HVPLUG_VENV": sys.prefix} if sys.prefix != sys.base_prefix else {}
    result = subprocess.run(
        [system_python(), str(TOOLS / "bench/cli_startup.py"), "--against", "no-such-rev-0"],
        cwd="/", env=plain_env(**venv), capture_output=True, text=True, timeout=120,
        check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "--against: 'no-such-rev-0' is not a commit, tag or branch" in result.stderr
