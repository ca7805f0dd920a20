"""The one options module: every oslo.config option hvplug reads.

Each group lives in its own module with ``register_opts(conf)`` and
``list_opts()``; ``hvplug.conf.opts.list_opts`` feeds
``oslo-config-generator --namespace hvplug``.

``CONF`` (oslo.config's global ``cfg.CONF`` with hvplug's options) is made
on first use, not on import: importing ``hvplug.conf.choices`` (the option
choices the CLI's parser offers) does not import oslo.config, so
``hvplug --help`` and argument errors never pay for it.  oslo.config is
imported with netaddr, rfc3986, stevedore and pickle deferred until it uses
them (IP address and URI options, configuration source drivers, exporting
its state): they were most of its import time (see ``doc/performance.md``).
"""

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oslo_config import cfg

    CONF: cfg.ConfigOpts

_lock = threading.Lock()

# oslo.config imports these at the top; only a few of its functions use them
# (inspect: only to name the caller of a deprecated option).
_OSLO_DEFERRED = ("netaddr", "rfc3986", "stevedore", "pickle", "inspect")


def oslo_cfg() -> Any:
    """``oslo_config.cfg``, imported (once) with :data:`_OSLO_DEFERRED` deferred."""
    from hvplug.conf._deferred import import_deferring

    return import_deferring("oslo_config.cfg", _OSLO_DEFERRED)


def _registered() -> Any:
    cfg = oslo_cfg()  # first: the option modules import oslo_config too

    from hvplug.conf import backends, libvirt, locks, target, xio

    conf = cfg.CONF
    libvirt.register_opts(conf)
    locks.register_opts(conf)
    target.register_opts(conf)
    xio.register_opts(conf)
    backends.register_opts(conf)
    return conf


def __getattr__(name: str) -> Any:
    if name != "CONF":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lock:
        conf = globals().get("CONF")
        if conf is None:
            conf = _registered()
            globals()["CONF"] = conf
    return conf
