"""Fuzzing hvplug's input boundary: generated connection_info for ``hvplug render``.

- :mod:`tests.fuzz.generator`: seeded, deterministic cases (valid seeds,
  structural, value and byte-level mutations) and the named builders the
  regression corpus uses;
- :mod:`tests.fuzz.properties`: what must hold for every case, and the
  in-process and subprocess runners that check it;
- ``python -m tests.fuzz.report``: run N cases and print a categorised
  failure report (``--jsonl FILE`` writes the failing cases in corpus form).
"""
