"""Choices of options and arguments, without oslo.config: the CLI's parser
offers them (``--bus``, ``--helper``) and the option modules declare them."""

# bus: what the guest sees on it ([libvirt] disk_bus documents each);
# the same keys as hvplug.virt.guest_disks.BUS_PREFIXES
DISK_BUS_LABELS = {"virtio": "virtio-blk", "scsi": "virtio-scsi", "sata": "AHCI SATA"}
DISK_BUSES = tuple(DISK_BUS_LABELS)
TARGET_HELPERS = ["tgtadm", "lioadm", "ietadm", "chiscsi", "iscsictl", "iseradm"]
