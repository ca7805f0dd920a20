"""Find and fill the files of ``xml_templates/``.

Installed from a wheel they are the package ``hvplug.xml_templates``; in a
source checkout they sit beside ``hvplug/``.
"""

import importlib.resources
import os
import string
from pathlib import Path

_SOURCE_TREE = Path(__file__).resolve().parent.parent / "xml_templates"


def template_text(name: str) -> str:
    """Return the text of template ``name`` (e.g. ``"guest.xml"``)."""
    try:
        return (importlib.resources.files("hvplug.xml_templates") / name).read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return (_SOURCE_TREE / name).read_text()


def render(template: str, **values) -> str:
    """Fill the ``${key}`` placeholders of ``template``; a missing value raises KeyError."""
    return string.Template(template_text(template)).substitute(values)


def guest_xml(name: str, memory_mib: int = 64, domain_type: str | None = None) -> str:
    """XML of the diskless verification guest.

    ``domain_type`` is ``kvm`` or ``qemu`` (TCG); pass what
    ``Host.guest_domain_type()`` says libvirt can run.  Without it, KVM is
    assumed where /dev/kvm is usable by this process.
    """
    if domain_type is None:
        domain_type = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"
    return render("guest.xml", name=name, domain_type=domain_type,
                  memory_mib=memory_mib)
