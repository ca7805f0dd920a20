"""Host-attached iSER: the iSCSI flow through open-iscsi's ``iser`` iface.

Kept for ``connection_info`` whose ``driver_volume_type`` is ``iser`` (what
a target with ``enable_iser`` hands out).  It is deprecated, as the
open-iscsi transport spec planned: the iSCSI driver with
``[libvirt] iscsi_iface = iser`` does the same, so map both types to it::

    [libvirt]
    iscsi_iface = iser
    volume_drivers = iscsi=hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver,
                     iser=hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver

Example ``connection_info``::

    {"driver_volume_type": "iser",
     "data": {"target_portal": "192.0.2.10:3260",
              "target_iqn": "iqn.2010-10.org.openstack:volume-42",
              "target_lun": 1, "target_discovered": false},
     "serial": "42"}
"""

import logging

from hvplug.conf import CONF
from hvplug.virt.volume.iscsi import LibvirtISCSIVolumeDriver

LOG = logging.getLogger(__name__)

ISER_IFACE = "iser"


class LibvirtISERVolumeDriver(LibvirtISCSIVolumeDriver):
    """Deprecated: ``LibvirtISCSIVolumeDriver`` with ``iscsi_iface = iser``."""

    driver_volume_type = "iser"

    def __init__(self, host, execute=None, **kwargs):
        super().__init__(host, execute, **kwargs)
        LOG.warning(
            "The iser volume driver (%s.%s) is deprecated: set [libvirt] iscsi_iface = iser "
            "and map 'iser' volumes to the iSCSI driver (volume_drivers = "
            "iser=hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver); iser_use_multipath "
            "and num_iser_scan_tries then give way to their iscsi_ namesakes.",
            __name__, type(self).__name__)

    def configured_iface(self) -> str:
        return ISER_IFACE

    def use_multipath(self) -> bool:
        return CONF.libvirt.iser_use_multipath

    def scan_tries(self) -> int:
        return CONF.libvirt.num_iser_scan_tries
