"""The one exception module: areas, templates, and no message made up elsewhere."""

import ast
import inspect
import re
from pathlib import Path

import pytest

from hvplug import exception

PACKAGE = Path(exception.__file__).parent
AREAS = (exception.HypervisorError, exception.SecretError, exception.InitiatorError,
         exception.TargetSideError, exception.ISEError, exception.FibreChannelError,
         exception.DependencyMissing)
# Errors of an operation as a whole, not of one area.
GENERAL = (exception.InvalidInput, exception.ProcessExecutionError, exception.LockTimeout,
           exception.Interrupted)
CLASSES = [cls for _, cls in inspect.getmembers(exception, inspect.isclass)
           if issubclass(cls, exception.HvplugError)]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_belongs_to_an_area_or_is_general(cls):
    if cls is exception.HvplugError or cls in AREAS:
        return
    assert issubclass(cls, AREAS + GENERAL), f"{cls.__name__} has no area"
    assert sum(issubclass(cls, area) for area in AREAS) <= 1


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_template_formats_and_holds_no_development_hint(cls):
    if "msg_fmt" not in vars(cls):
        return
    keys = re.findall(r"%\((\w+)\)s", cls.msg_fmt)
    assert cls.msg_fmt % dict.fromkeys(keys, "x")
    for hint in ("tools/", "doc/", "tests/", ".venv", "--debug"):
        assert hint not in cls.msg_fmt, f"{cls.__name__} points at {hint}"


def test_bad_input_is_exit_2_in_every_area():
    assert exception.IqnInUse.exit_code == exception.EXIT_BAD_INPUT
    assert issubclass(exception.IqnInUse, exception.TargetSideError)
    assert exception.TargetError.exit_code == exception.EXIT_FAILED


def test_tgtd_errors_live_here_and_pickle():
    import pickle

    from hvplug.target import tgtd_ipc
    error = tgtd_ipc.tgtd_error("target new tid=7", tgtd_ipc.Err.TARGET_EXIST)
    assert isinstance(error, exception.TgtdError) and tgtd_ipc.TgtdError is exception.TgtdError
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (again.code, again.message) == (error.code, error.message)


def _calls_with_free_text(tree: ast.AST):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (func.attr if isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name) and func.value.id == "exception"
                else func.id if isinstance(func, ast.Name) and func.id == "HvplugError"
                else None)
        if name and node.args:
            yield name, node.lineno


def test_no_call_site_makes_up_a_message():
    """Errors are raised with their template's keywords, never with text of
    their own (``HvplugError("...")``)."""
    found = [f"{path.relative_to(PACKAGE)}:{line} {name}(...)"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "exception.py"
             for name, line in _calls_with_free_text(ast.parse(path.read_text()))]
    assert found == []
