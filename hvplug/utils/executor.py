"""The one way hvplug runs commands.

Classes that run commands take an ``execute`` callable with this signature,
so tests inject a recording fake instead of patching subprocess.  Secrets
never travel in arguments: pass them in files or on stdin, and name them in
``secrets`` so they are masked if they ever show up in an error.
"""

import logging
import subprocess

from hvplug import exception
from hvplug.utils.masking import redact

LOG = logging.getLogger(__name__)


def execute(*cmd: str, check_exit_code: tuple[int, ...] = (0,), timeout: float = 60.0,
            input: str | None = None, secrets: tuple[str, ...] = ()) -> tuple[str, str]:
    """Run ``cmd``; return ``(stdout, stderr)``.

    An exit code outside ``check_exit_code`` raises ProcessExecutionError;
    so does a missing program or a run longer than ``timeout`` seconds.
    """
    LOG.debug("running %s", redact(" ".join(cmd), list(secrets)))
    try:
        result = subprocess.run(cmd, input=input, capture_output=True, text=True,
                                timeout=timeout, check=False)
    except FileNotFoundError:
        raise exception.ProcessExecutionError(
            cmd=cmd[0], status="-", stderr="program not found; is it installed?") from None
    except subprocess.TimeoutExpired:
        raise exception.ProcessTimeout(
            cmd=cmd[0], status="-", stderr=f"no answer within {timeout} s",
            timeout=timeout) from None
    if result.returncode not in check_exit_code:
        raise exception.ProcessExecutionError(
            cmd=" ".join(cmd[:2]), status=result.returncode,
            stderr=redact(result.stderr.strip(), list(secrets)),
            stdout=result.stdout)
    return result.stdout, result.stderr
