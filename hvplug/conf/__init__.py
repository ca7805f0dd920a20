"""The one options module: every oslo.config option hvplug reads.

Each group lives in its own module with ``register_opts(conf)`` and
``list_opts()``; ``hvplug.conf.opts.list_opts`` feeds
``oslo-config-generator --namespace hvplug``.
"""

from oslo_config import cfg

from hvplug.conf import backends, libvirt, locks, target, xio

CONF = cfg.CONF

libvirt.register_opts(CONF)
locks.register_opts(CONF)
target.register_opts(CONF)
xio.register_opts(CONF)
backends.register_opts(CONF)
