"""hvplug.conf._deferred: a module imported with some of its imports deferred
(how oslo.config is imported without netaddr, rfc3986, stevedore, pickle)."""

import sys
import threading

import pytest

from hvplug.conf._deferred import import_deferring

NAMES = ("hvplug_t_user", "hvplug_t_dep", "hvplug_t_other", "hvplug_t_eager")


@pytest.fixture
def modules(tmp_path, monkeypatch):
    (tmp_path / "hvplug_t_dep.py").write_text("LOADS = []\nLOADS.append(1)\nvalue = 42\n")
    (tmp_path / "hvplug_t_user.py").write_text(
        "import hvplug_t_dep\n\ndef use():\n    return hvplug_t_dep.value\n")
    (tmp_path / "hvplug_t_eager.py").write_text("from hvplug_t_dep import value\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in NAMES:
        sys.modules.pop(name, None)


def test_the_deferred_module_loads_on_first_use(modules):
    user = import_deferring("hvplug_t_user", ("hvplug_t_dep",))
    assert "hvplug_t_dep" not in sys.modules  # the stand-in left sys.modules again
    assert user.use() == 42
    import hvplug_t_dep
    assert hvplug_t_dep.LOADS == [1]  # one module, loaded once
    assert user.hvplug_t_dep.value is hvplug_t_dep.value


def test_others_importing_it_get_the_real_module(modules):
    user = import_deferring("hvplug_t_user", ("hvplug_t_dep",))
    import hvplug_t_dep  # before the user touched it
    assert type(hvplug_t_dep).__name__ == "module" and hvplug_t_dep.value == 42
    assert user.use() == 42 and hvplug_t_dep.LOADS == [1]


def test_an_import_from_it_while_importing_loads_it(modules):
    eager = import_deferring("hvplug_t_eager", ("hvplug_t_dep",))
    assert eager.value == 42 and sys.modules["hvplug_t_dep"].LOADS == [1]


def test_already_imported_modules_are_not_stood_in_for(modules):
    import hvplug_t_dep
    user = import_deferring("hvplug_t_user", ("hvplug_t_dep",))
    assert user.hvplug_t_dep is hvplug_t_dep


def test_probes_of_dunder_names_do_not_load_it(modules):
    user = import_deferring("hvplug_t_user", ("hvplug_t_dep",))
    assert not hasattr(user.hvplug_t_dep, "__wrapped__")
    assert "hvplug_t_dep" not in sys.modules


def test_threads_racing_to_first_use_share_one_module(modules):
    user = import_deferring("hvplug_t_user", ("hvplug_t_dep",))
    barrier, results = threading.Barrier(8), []

    def first_use():
        barrier.wait()
        results.append(user.use())
    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [42] * 8 and sys.modules["hvplug_t_dep"].LOADS == [1]


def test_an_imported_module_is_returned_as_it_is(modules):
    import hvplug_t_user
    assert import_deferring("hvplug_t_user", ("hvplug_t_dep",)) is hvplug_t_user
