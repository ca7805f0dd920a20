"""Run generated cases in-process and print a categorised failure report.

    .venv/bin/python -m tests.fuzz.report [--seed N] [--cases N] [--jsonl FILE]
                                          [--corpus] [--no-minimise]

Each category (property and detail, values cut out) is printed with its
count and its smallest case, shrunk by dropping keys while the same
category still fails.  ``--jsonl FILE`` writes one failing case per
category in the regression corpus's form; ``--corpus`` runs
tests/data/fuzz/regressions.jsonl instead of generated cases.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz import generator
from tests.fuzz.generator import Case
from tests.fuzz.properties import InProcess, category

CORPUS = Path(__file__).resolve().parents[1] / "data" / "fuzz" / "regressions.jsonl"


def load_corpus(path: Path = CORPUS) -> list[Case]:
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            cases.append(Case.from_record(json.loads(line)))
    return cases


def _still_fails(runner: InProcess, case: Case, doc, wanted: str) -> Case | None:
    try:
        data = generator.encode(doc, case.ascii_only)
    except Exception:  # noqa: BLE001 - a document the shrinker broke
        return None
    trial = Case(case.id, data, case.note, case.kind, case.argv, case.stdin, case.config,
                 case.passwords, doc, case.ascii_only)
    return trial if wanted in {category(f) for f in runner.check(trial)} else None


def minimise(runner: InProcess, case: Case, wanted: str, budget: int = 200) -> Case:
    """Drop keys, list items and CLI options while ``wanted`` still fails."""
    if case.doc is None or isinstance(case.doc, generator.Raw):
        return case
    best = case
    for option in list(best.argv):
        argv = [a for a in best.argv if a != option]
        if option in ("--bus", "--dev"):
            continue
        trial = Case(best.id, best.data, best.note, best.kind, argv, best.stdin,
                     best.config, best.passwords, best.doc, best.ascii_only)
        if wanted in {category(f) for f in runner.check(trial)}:
            best = trial
    changed = True
    while changed and budget > 0:
        changed = False
        for path in sorted(generator.paths(best.doc), key=len, reverse=True):
            budget -= 1
            if budget <= 0:
                break
            doc = copy.deepcopy(best.doc)
            try:
                parent = generator.get_at(doc, path[:-1])
                if isinstance(parent, generator.Dup):
                    continue
                generator.del_at(doc, path)
            except (KeyError, IndexError, TypeError):
                continue
            trial = _still_fails(runner, best, doc, wanted)
            if trial is not None:
                best, changed = trial, True
                break
    return best


def run(cases, runner: InProcess):
    by_category: dict[str, list[tuple[Case, tuple]]] = collections.defaultdict(list)
    failed_cases = 0
    total = 0
    for case in cases:
        total += 1
        failures = runner.check(case)
        if failures:
            failed_cases += 1
        for failure in dict.fromkeys(failures):
            by_category[category(failure)].append((case, failure))
    return total, failed_cases, by_category


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=generator.seed_from_env())
    parser.add_argument("--cases", type=int, default=generator.cases_from_env())
    parser.add_argument("--jsonl", type=Path, help="write one failing case per category here")
    parser.add_argument("--corpus", action="store_true", help="run the regression corpus")
    parser.add_argument("--no-minimise", action="store_true")
    parser.add_argument("--no-parser-cache", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hvplug-fuzz-") as tmp:
        runner = InProcess(Path(tmp), cache_parser=not args.no_parser_cache)
        with runner.session():
            cases = load_corpus() if args.corpus else generator.generate(args.seed, args.cases)
            start = time.perf_counter()
            total, failed, by_category = run(cases, runner)
            elapsed = time.perf_counter() - start
            timings = sorted(runner.timings)
            print(f"seed {args.seed}: {total} cases in {elapsed:.1f} s; main() per case: "
                  f"median {statistics.median(timings) * 1000:.2f} ms, "
                  f"p99 {timings[int(len(timings) * 0.99)] * 1000:.1f} ms, "
                  f"max {timings[-1] * 1000:.0f} ms; {failed} cases failed")
            records = []
            for name, hits in sorted(by_category.items(), key=lambda kv: -len(kv[1])):
                case, _ = min(hits, key=lambda h: len(h[0].data))
                if not args.no_minimise:
                    case = minimise(runner, case, name)
                rc, out, err = runner.run(case)
                print(f"\n## {name}  ({len(hits)} cases)")
                print(f"   case {case.id}: {case.note[:160]}")
                print(f"   argv: render --connection-info {'-' if case.stdin else 'FILE'} "
                      f"{' '.join(case.argv)}  (config {case.config})")
                shown = case.data[:600]
                try:
                    print(f"   input: {shown.decode('utf-8')!r}"
                          + (" ..." if len(case.data) > 600 else ""))
                except UnicodeDecodeError:
                    print(f"   input bytes: {shown!r}")
                print(f"   exit {rc}; stderr: {err.strip()[:300]!r}")
                if rc == 0:
                    print(f"   stdout: {out[:300]!r}")
                records.append(case.to_record(found=f"{name} (exit {rc})"))
            if args.jsonl:
                with args.jsonl.open("w", encoding="utf-8") as f:
                    for record in records:
                        if len(json.dumps(record)) < 200_000:
                            f.write(json.dumps(record) + "\n")
    return 1 if by_category else 0


if __name__ == "__main__":
    sys.exit(main())
