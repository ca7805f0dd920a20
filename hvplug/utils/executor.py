"""The one way hvplug runs commands.

Classes that run commands take an ``execute`` callable with this signature,
so tests inject a recording fake instead of patching subprocess.  Secrets
never travel in arguments: pass them in files or on stdin, and name them in
``secrets`` so they are masked if they ever show up in an error.
"""

import io
import logging
import time
from collections.abc import Callable
from typing import cast

from hvplug import exception
from hvplug.utils.masking import mask_argv, redact

LOG = logging.getLogger(__name__)


def execute(*cmd: str, check_exit_code: tuple[int, ...] = (0,), timeout: float | None = 60.0,
            input: str | None = None, secrets: tuple[str, ...] = (),
            on_output: Callable[[bytes], None] | None = None) -> tuple[str, str]:
    """Run ``cmd``; return ``(stdout, stderr)``.

    An exit code outside ``check_exit_code`` raises ProcessExecutionError;
    so does a missing program or a run longer than ``timeout`` seconds
    (``None``: no limit, for long copies that report progress).  With
    ``on_output``, stdout is handed over chunk by chunk as it comes (e.g.
    ``qemu-img -p`` progress) instead of being returned.
    """
    import subprocess  # here, not at the top: most CLI commands run none

    LOG.debug("running %s", " ".join(mask_argv(cmd, secrets)))
    try:
        if on_output is None:
            result = subprocess.run(cmd, input=input, capture_output=True, text=True,
                                    timeout=timeout, check=False)
            status, stdout, stderr = result.returncode, result.stdout, result.stderr
        else:
            status, stdout, stderr = _streamed(cmd, on_output, timeout)
    except FileNotFoundError:
        raise exception.ProcessExecutionError(
            cmd=cmd[0], status="-", stderr="program not found; is it installed?") from None
    except subprocess.TimeoutExpired:
        raise exception.ProcessTimeout(
            cmd=cmd[0], status="-", stderr=f"no answer within {timeout} s",
            timeout=timeout) from None
    if status not in check_exit_code:
        raise exception.ProcessExecutionError(
            cmd=" ".join(cmd[:2]), status=status,
            stderr=redact(stderr.strip(), list(secrets)), stdout=stdout)
    return stdout, stderr


def _streamed(cmd, on_output, timeout) -> tuple[int, str, str]:
    import subprocess

    deadline = None if timeout is None else time.monotonic() + timeout
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None  # both are PIPEs
        stdout = cast(io.BufferedReader, proc.stdout)
        for chunk in iter(lambda: stdout.read1(4096), b""):
            on_output(chunk)
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                raise subprocess.TimeoutExpired(cmd, timeout)
        stderr = proc.stderr.read().decode(errors="replace")
        return proc.wait(), "", stderr
