"""The hypervisor side: libvirt XML objects and volume drivers."""
