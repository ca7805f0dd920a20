"""Whether the real stack (libvirtd + QEMU, tgtd) is here, for functional tests.

Outside CI a missing piece skips the test with the reason printed; under
``CI=true`` it fails the test, because CI must run the functional tests for
real.  ``tools/stack start`` brings the stack up.
"""

import os
import shutil
import subprocess

import pytest

LIBVIRT_URI = os.environ.get("HVPLUG_TEST_URI", "qemu:///system")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip (or, in CI, fail) the current test because ``reason``."""
    message = f"{reason} -- run 'tools/stack start' as root"
    if in_ci():
        pytest.fail(f"CI=true and the stack is missing: {message}")
    print(f"SKIPPED: {message}")
    pytest.skip(message)


def libvirt_problem() -> str | None:
    """None when qemu:///system answers, else why not."""
    try:
        import libvirt
    except ImportError as exc:
        return f"libvirt-python not importable: {exc}"
    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        conn = libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        return f"libvirtd not reachable at {LIBVIRT_URI}: {exc.get_error_message()}"
    conn.close()
    return None


def tgtd_problem() -> str | None:
    """None when tgtd answers tgtadm, else why not."""
    if shutil.which("tgtadm") is None:
        return "tgtadm not installed (Debian package 'tgt')"
    result = subprocess.run(
        ["tgtadm", "--lld", "iscsi", "--mode", "sys", "--op", "show"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        return f"tgtd not answering: {result.stderr.strip() or result.stdout.strip()}"
    return None


def require_libvirtd() -> None:
    problem = libvirt_problem()
    if problem:
        missing(problem)


def require_tgtd() -> None:
    problem = tgtd_problem()
    if problem:
        missing(problem)
