"""Fuzzing ``hvplug render``: generated connection_info must never crash it.

Seeded (``HVPLUG_FUZZ_SEED``, default in tests/fuzz/generator.py) and sized
(``HVPLUG_FUZZ_CASES``, default 10,000); the seed is printed, so a failure
is reproduced with the same two variables.  Every case must meet the
properties of :mod:`tests.fuzz.properties`; a failure lists each broken
property with its count and smallest case.  Run the report for more:
``.venv/bin/python -m tests.fuzz.report``.
"""

import collections
import concurrent.futures
import random

import pytest

from tests.fuzz import generator
from tests.fuzz.properties import InProcess, category, check, run_subprocess

pytestmark = pytest.mark.fuzz
SHARDS = 10


def _summary(failed: list) -> str:
    by_category = collections.defaultdict(list)
    for case, failures in failed:
        for failure in dict.fromkeys(failures):
            by_category[category(failure)].append(case)
    lines = [f"{len(failed)} cases broke a property (seed {generator.seed_from_env()}):"]
    for name, cases in sorted(by_category.items(), key=lambda kv: -len(kv[1])):
        smallest = min(cases, key=lambda c: len(c.data))
        lines.append(f"  {name}: {len(cases)} cases; e.g. {smallest.id} ({smallest.note[:100]})"
                     f" argv {smallest.argv} input {smallest.data[:300]!r}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("shard", range(SHARDS))
def test_generated_cases(shard, tmp_path, capsys):
    seed, count = generator.seed_from_env(), generator.cases_from_env()
    with capsys.disabled():
        if shard == 0:
            print(f"\n[fuzz] seed {seed} ({generator.SEED_ENV}), {count} cases "
                  f"({generator.CASES_ENV})")
    runner = InProcess(tmp_path)
    failed = []
    with runner.session():
        for index in range(shard, count, SHARDS):
            case = generator.make_case(seed, index)
            failures = runner.check(case)
            if failures:
                failed.append((case, failures))
    assert not failed, _summary(failed)


def test_valid_seeds_render(tmp_path):
    """Every unmutated seed is valid input: exit 0, schema-valid XML (the
    generator is not testing hvplug's refusals alone)."""
    runner = InProcess(tmp_path)
    failed = []
    with runner.session():
        for case in generator.valid_seeds(generator.seed_from_env()):
            rc, out, err = runner.run(case)
            failures = check(case, rc, out, err) + ([] if rc == 0 else [("exit-code", err)])
            if failures:
                failed.append((case, failures))
    assert not failed, _summary(failed)


def test_generator_is_deterministic():
    first = [generator.make_case(7, i).data for i in range(50)]
    assert first == [generator.make_case(7, i).data for i in range(50)]
    assert len(set(first)) > 40


def _subprocess_sample(seed: int, n: int = 40) -> list:
    """``n`` cases for real processes: every kind, a non-UTF-8 file, stdin."""
    rng = random.Random(f"{seed}:subprocess")
    picked = [generator.make_case(seed, i) for i in rng.sample(range(100_000), n - 3)]
    base = generator._base(auth_method="CHAP", auth_username="u1",
                           auth_password="PwMarkSubprocess01")
    text = generator.dump(base)
    picked += [
        generator.Case("sub-latin1", text.replace('"v-1"', '"v-\u00e9"', 1).encode("latin-1"),
                       "not UTF-8 file", "bytes", passwords=["PwMarkSubprocess01"]),
        generator.Case("sub-latin1-stdin", b'{"driver_volume_type": "iscsi\xe9", "data": {}}',
                       "not UTF-8 on stdin", "bytes", stdin=True),
        generator.Case("sub-stdin", text.encode(), "valid on stdin", "seed", ["--json"],
                       stdin=True, passwords=["PwMarkSubprocess01"], doc=base),
    ]
    return picked


def test_subprocess_sample(tmp_path):
    """The same properties for real ``python -m hvplug.cli.main`` processes:
    real stdio encodings, real logging set-up, argv as bytes."""
    cases = _subprocess_sample(generator.seed_from_env())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda c: (c, run_subprocess(c, tmp_path)), cases))
    failed = [(case, f) for case, result in results if (f := check(case, *result))]
    assert not failed, _summary(failed)


def test_ten_thousand_distinct_portals_render(tmp_path):
    """10,000 distinct target_portals render (exit 0, valid XML); how long it
    takes is tools/bench/render_portals.py's business, not an assertion."""
    runner = InProcess(tmp_path)
    doc = generator.portals_doc(10_000)
    case = generator.Case("portals-10000", generator.encode(doc), "10,000 portals", "named",
                          doc=doc)
    with runner.session():
        rc, out, err = runner.run(case)
    assert rc == 0, err
    assert check(case, rc, out, err) == []
