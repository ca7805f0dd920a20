import sys

import pytest

from hvplug import exception
from hvplug.utils.executor import (
    execute as real_execute,  # bound before the autouse fake
)


def test_returns_output():
    out, err = real_execute(sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)")
    assert (out, err) == ("out\n", "err\n")


def test_stdin_and_accepted_codes():
    out, _ = real_execute(sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1]); sys.exit(3)",
                          input="abc", check_exit_code=(0, 3))
    assert out == "cba\n"


def test_failure_masks_secrets():
    with pytest.raises(exception.ProcessExecutionError) as err:
        real_execute(sys.executable, "-c", "import sys; sys.exit('login as u:hunter2 refused')",
                     secrets=("hunter2",))
    assert "hunter2" not in str(err.value) and "***" in err.value.stderr
    assert "exited 1" in str(err.value)


def test_missing_program_and_timeout():
    with pytest.raises(exception.ProcessExecutionError) as err:
        real_execute("/nonexistent/hvplug-tool")
    assert "program not found" in str(err.value)
    with pytest.raises(exception.ProcessTimeout) as err:
        real_execute(sys.executable, "-c", "import time; time.sleep(5)", timeout=0.2)
    assert "no answer within 0.2 s" in str(err.value)
