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
