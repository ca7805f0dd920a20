"""Every fuzz case that ever broke a property of ``hvplug render``, kept.

tests/data/fuzz/regressions.jsonl holds one case per line (its bytes as
``text``, ``b64``, or a named ``build`` from tests/fuzz/generator.py, and a
note of what it found); each must now meet every property of
:mod:`tests.fuzz.properties`.  Add a line for each new finding
(``python -m tests.fuzz.report --jsonl FILE`` writes them).
"""

import pytest

from tests.fuzz.properties import InProcess
from tests.fuzz.report import CORPUS, load_corpus

pytestmark = pytest.mark.fuzz
CASES = load_corpus(CORPUS)


def test_corpus_is_not_empty():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_regression(case, tmp_path):
    runner = InProcess(tmp_path)
    with runner.session():
        failures = runner.check(case)
    assert not failures, f"{case.note}: {failures}"
