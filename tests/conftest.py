"""Fixtures shared by every test directory."""

import pytest
from oslo_config import fixture as config_fixture_mod

from hvplug.conf import CONF


@pytest.fixture(autouse=True)
def config_fixture():
    """Each test starts from default options and leaves them so."""
    fixture = config_fixture_mod.Config(CONF)
    fixture.setUp()
    CONF([], project="hvplug", prog="hvplug", default_config_files=[],
         default_config_dirs=[])
    yield fixture
    fixture.cleanUp()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "stack: needs the real daemons (libvirtd + QEMU, tgtd); "
        "'tools/run-tests --unit' runs -m 'not stack'")


def pytest_collection_modifyitems(config, items):
    """Functional tests, and the contract tests' real-libvirtd half, need the stack."""
    for item in items:
        parts = item.path.parts
        callspec = getattr(item, "callspec", None)
        real = callspec is not None and "real" in callspec.params.values()
        if "functional" in parts or ("contract" in parts and real):
            item.add_marker(pytest.mark.stack)
