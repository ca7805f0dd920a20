"""Run a tool of this repository with the project's venv, whichever python started it.

A tool under tools/ that imports hvplug (or its dependencies) calls
``hvplug_venv.ensure()`` before those imports.  When they cannot be imported
with the running interpreter, the tool is started again, with the same
arguments, by ``${HVPLUG_VENV:-<repo>/.venv}/bin/python``; when that venv
does not exist either, it exits 2 with one line on stderr naming the command
that creates it.

Only the standard library here: this module runs before any venv is found.
"""

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_MARK = "HVPLUG_VENV_REEXEC"  # set for the re-started tool: never loop


def venv_python() -> Path:
    return Path(os.environ.get("HVPLUG_VENV") or REPO / ".venv") / "bin" / "python"


def _missing(modules: tuple[str, ...]) -> str | None:
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def ensure(modules: tuple[str, ...] = ("hvplug", "oslo_config", "libvirt", "lxml")) -> None:
    """Return if ``modules`` import here; else re-exec with the venv, or exit 2."""
    restarted = os.environ.pop(_MARK, None)  # not passed on to the tool's own children
    missing = _missing(modules)
    if missing is None:
        return
    tool = sys.argv[0]
    python = venv_python()
    if python.is_file() and os.access(python, os.X_OK) and not restarted:
        os.environ[_MARK] = "1"
        os.execv(str(python), [str(python), tool, *sys.argv[1:]])  # noqa: S606 - no shell
    venv = python.parent.parent
    reason = f"{python} cannot import it either" if restarted else f"there is no venv at {venv}"
    # One line: what is missing, and the command that fixes it.
    print(f"{os.path.basename(tool)}: Python module '{missing}' is not importable with "
          f"{sys.executable} and {reason}; create the project's venv with "
          f"{REPO}/tools/bootstrap --venv-only (HVPLUG_VENV=DIR puts it elsewhere), then "
          f"run it again, or as {python} {tool}", file=sys.stderr)
    sys.exit(2)
