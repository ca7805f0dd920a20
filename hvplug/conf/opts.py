"""Entry point of ``oslo-config-generator --namespace hvplug``."""

from hvplug.conf import backends, libvirt, locks, target

_MODULES = (libvirt, locks, target, backends)


def list_opts():
    """Return ``[(group, [opts])]`` for every options module."""
    return [
        (group, opts)
        for module in _MODULES
        for group, opts in module.list_opts().items()
    ]
