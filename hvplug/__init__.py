"""hvplug: plug block volumes into libvirt/QEMU guests, and export them."""

__version__ = "0.1.0"
