"""The one options module: every oslo.config option hvplug reads.

Each group lives in its own module with ``register_opts(conf)`` and
``list_opts()``; ``hvplug.conf.opts.list_opts`` feeds
``oslo-config-generator --namespace hvplug``.

``CONF`` (oslo.config's global ``cfg.CONF`` with hvplug's options) is made
on first use, not on import: importing ``hvplug.conf.choices`` (the option
choices the CLI's parser offers) does not import oslo.config, so
``hvplug --help`` and argument errors never pay for it.
"""

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oslo_config import cfg

    CONF: cfg.ConfigOpts

_lock = threading.Lock()


def _registered() -> Any:
    from oslo_config import cfg

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
