"""The ``fuzz`` marker: ``-m fuzz`` runs only the render fuzz tests,
``-m "not fuzz"`` everything else."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fuzz: generated-input tests of hvplug's input boundary (tests/fuzz)")
