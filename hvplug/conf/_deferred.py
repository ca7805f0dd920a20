"""Importing a module with some of its own imports deferred to first use.

:func:`hvplug.conf.oslo_cfg` imports oslo.config this way: ``oslo_config``
imports netaddr, rfc3986, stevedore and pickle at the top, for IP address
and URI options, configuration source drivers and exporting its state, and
they were most of its import time.
"""

import importlib
import sys
import types

# Dunder names a stand-in forwards (so they import the module): what importing
# from it reads; other dunders (probes by inspect, copy, mock) do not import it.
_FORWARDED = ("__path__", "__all__", "__file__", "__version__")


class _Deferred(types.ModuleType):
    """Stands in for module ``name``; the first attribute read imports it.

    It is in ``sys.modules`` only while :func:`import_deferring` imports its
    module, so whoever else imports ``name`` gets the real module; the
    importers it was handed to reach the real module through it.
    """

    def __init__(self, name: str):
        super().__init__(name, f"{name}, imported on first use")

    def _real(self) -> types.ModuleType:
        real = self.__dict__.get("_hvplug_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:  # read while still standing in
                del sys.modules[self.__name__]
            real = self.__dict__["_hvplug_real"] = importlib.import_module(self.__name__)
        return real

    def __getattr__(self, attr: str) -> object:
        if attr.startswith("__") and attr not in _FORWARDED:  # probes: no import
            raise AttributeError(attr)
        return getattr(self._real(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._real())


def import_deferring(module: str, deferred: tuple[str, ...]) -> types.ModuleType:
    """Import ``module`` with its imports of ``deferred`` modules postponed.

    ``module`` imports each of ``deferred`` (when not imported yet) as a
    stand-in, which imports the real module the first time ``module`` uses
    it: for dependencies a module imports at the top but only a few of its
    functions use.
    """
    if module in sys.modules:
        return sys.modules[module]
    stand_ins: dict[str, _Deferred] = {}
    for name in deferred:
        if name not in sys.modules:
            stand_ins[name] = sys.modules[name] = _Deferred(name)
    try:
        return importlib.import_module(module)
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
