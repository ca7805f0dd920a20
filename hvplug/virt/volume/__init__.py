"""Volume drivers: one module per driver, mapped by ``[libvirt] volume_drivers``."""
