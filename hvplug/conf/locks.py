"""Options of hvplug's host-wide locks, in the ``[locks]`` group."""

from oslo_config import cfg

locks_group = cfg.OptGroup(
    "locks",
    title="Host-wide locks",
    help="How concurrent hvplug processes on one host take turns: flock "
    "files, one per domain and one per secret usage.",
)

locks_opts = [
    cfg.StrOpt(
        "lock_path",
        default="/run/hvplug/locks",
        help="Directory of hvplug's lock files (created mode 0700). Every "
        "hvplug process on a host must use the same directory, or they do "
        "not see each other's locks."),
    cfg.FloatOpt(
        "lock_timeout",
        default=120.0,
        min=0.0,
        help="Seconds to wait for a lock another hvplug process or thread "
        "holds; then the operation fails and names what the holder is "
        "doing. Set it above [libvirt] device_detach_timeout."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(locks_group)
    conf.register_opts(locks_opts, group=locks_group)


def list_opts():
    return {locks_group: locks_opts}
