"""Choices of options and arguments, without oslo.config: the CLI's parser
offers them (``--bus``, ``--helper``) and the option modules declare them."""

DISK_BUSES = ("virtio", "scsi", "sata")  # hvplug.virt.guest_disks.BUS_PREFIXES' keys
TARGET_HELPERS = ["tgtadm", "lioadm", "ietadm", "chiscsi", "iscsictl", "iseradm"]
