"""Volume backends as named configuration sections.

::

    [DEFAULT]
    enabled_backends = ise1

    [ise1]
    volume_driver = hvplug.drivers.xio.iscsi.XIOISCSIDriver
    san_ip = 192.0.2.50
    san_password = ...

Each backend's section gets the generic backend options plus the options
its driver class declares (``driver_opts``), registered when the backend is
first asked for.  ``backend_conf(name)`` returns an object read like an
oslo.config group (``conf.san_ip``): a value the section does not set comes
from ``[backend_defaults]``.  Anything that takes a conf group object (the
volume drivers, the target helpers) can take it.
"""

from typing import Any

from oslo_config import cfg

from hvplug import exception
from hvplug.conf.xio import backend_defaults_group, xio_opts
from hvplug.utils.importutils import ImportClassError, import_class

enabled_backends_opt = cfg.ListOpt(
    "enabled_backends", default=[],
    help="Names of the volume backends; each has its own section of that "
    "name with volume_driver and the driver's options.")

backend_opts = [
    cfg.StrOpt("volume_driver",
               help="Driver class of the backend, as a dotted path, e.g. "
               "hvplug.drivers.xio.iscsi.XIOISCSIDriver or "
               "hvplug.drivers.xio.fc.XIOFCDriver."),
    cfg.StrOpt("volume_backend_name",
               help="Name the backend reports in its stats; default: the "
               "section name."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opt(enabled_backends_opt)
    conf.register_group(backend_defaults_group)
    conf.register_opts(backend_opts, group=backend_defaults_group)


def list_opts():
    """``[backend_defaults]``: the generic options and every driver's."""
    return {backend_defaults_group: [*backend_opts, *xio_opts]}


# where a value comes from when nobody set it
_UNSET = (cfg.Locations.opt_default, cfg.Locations.set_default)


class BackendConf:
    """One backend's options: its section first, then ``[backend_defaults]``."""

    def __init__(self, conf: cfg.ConfigOpts, name: str):
        self._conf = conf
        self.backend_name = name

    def __getattr__(self, opt: str):
        if opt.startswith("_"):
            raise AttributeError(opt)
        location = self._conf.get_location(opt, self.backend_name)
        unset = location is None or location.location in _UNSET
        if unset and opt in self._conf[backend_defaults_group.name]:
            return self._conf[backend_defaults_group.name][opt]
        return self._conf[self.backend_name][opt]

    def __repr__(self) -> str:
        return f"BackendConf({self.backend_name!r})"


def import_driver(path: str, backend: str) -> Any:
    """``volume_driver`` of ``backend`` → its class, checked like volume_drivers."""
    module_name, _, class_name = (path or "").strip().rpartition(".")
    no_driver = f"{module_name} has no volume driver class {class_name}"
    try:
        cls = import_class(path)
    except ImportClassError as exc:
        reason = no_driver if exc.kind in ("missing", "type") else exc.reason
        raise exception.InvalidBackendDriver(backend=backend, path=path, reason=reason) from None
    if not hasattr(cls, "driver_opts"):
        raise exception.InvalidBackendDriver(backend=backend, path=path, reason=no_driver)
    return cls


def _register_backend(conf: cfg.ConfigOpts, name: str) -> None:
    """The backend's section with the generic options and its driver's."""
    conf.register_group(cfg.OptGroup(name))
    conf.register_opts(backend_opts, group=name)
    path = BackendConf(conf, name).volume_driver
    if not path:
        raise exception.InvalidBackendDriver(
            backend=name, path="", reason=f"[{name}] sets no volume_driver")
    cls = import_driver(path, name)
    conf.register_opts(cls.driver_opts, group=name)
    for opt in [*backend_opts, *cls.driver_opts]:  # bad values fail now, not at first use
        try:
            getattr(BackendConf(conf, name), opt.dest)
        except (cfg.Error, ValueError) as exc:
            detail = str(exc).rpartition("is not valid: ")[2]
            raise exception.ConfigFileError(reason=f"[{name}] {opt.dest}: {detail}") from None


def backend_conf(name: str, conf: cfg.ConfigOpts | None = None) -> BackendConf:
    """The options of enabled backend ``name``; an unknown name is InvalidInput."""
    if conf is None:
        from hvplug.conf import CONF
        conf = CONF
    enabled = [b.strip() for b in conf.enabled_backends if b.strip()]
    if name not in enabled:
        raise exception.BackendNotFound(
            backend=name, known=", ".join(enabled) or "none")
    _register_backend(conf, name)
    return BackendConf(conf, name)


def load_driver(name: str, conf: cfg.ConfigOpts | None = None):
    """An instance of backend ``name``'s volume driver, given its options."""
    bconf = backend_conf(name, conf)
    return import_driver(bconf.volume_driver, name)(bconf)
