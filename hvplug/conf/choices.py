"""Choices of options and arguments, without oslo.config: the CLI's parser
offers them (``--bus``, ``--helper``, ``--transport``) and the option modules
declare them."""

# bus: what the guest sees on it ([libvirt] disk_bus documents each);
# the same keys as hvplug.virt.guest_disks.BUS_PREFIXES
DISK_BUS_LABELS = {"virtio": "virtio-blk", "scsi": "virtio-scsi", "sata": "AHCI SATA"}
DISK_BUSES = tuple(DISK_BUS_LABELS)
TARGET_HELPERS = ["tgtadm", "lioadm", "ietadm", "chiscsi", "iscsictl", "iseradm"]
# open-iscsi transports: hvplug.initiator.hardware.TRANSPORTS (software ones,
# then the offload ones), which the parser of ``hvplug iface create`` names
# without importing the initiator layer
ISCSI_TRANSPORTS = ("tcp", "iser", "cxgb3i", "cxgb4i", "qla4xxx", "qedi", "bnx2i",
                    "be2iscsi", "ocs")
# <disk device=...>: the disk, or the SCSI LUN passed through (scsi-block,
# bus scsi only); the same as hvplug.virt.guest_disks.DISK_DEVICES
DISK_DEVICE_LABELS = {"disk": "a virtual disk", "lun": "the SCSI LUN passed through"}
DISK_DEVICES = tuple(DISK_DEVICE_LABELS)
