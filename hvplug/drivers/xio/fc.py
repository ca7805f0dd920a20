"""``XIOFCDriver``: the ISE over Fibre Channel.

``initialize_connection("vol1", {"wwpns": ["21000024ff3a1b2c"]})`` returns::

    {"driver_volume_type": "fibre_channel",
     "data": {"target_wwn": ["5001438001234560", "5001438001234561"],
              "target_lun": 1, "target_discovered": True,
              "initiator_target_map": {"21000024ff3a1b2c": ["5001438001234560",
                                                           "5001438001234561"]},
              "volume_id": "vol1", "encrypted": False, "access_mode": "rw"},
     "serial": "vol1"}

Every FC port of the array is a target of every initiator port (the
fabric's zoning decides what is really reachable).
"""

import contextlib

from hvplug import exception
from hvplug.drivers.xio.common import XIOISEDriver, normalize_wwn
from hvplug.image import iscsi_copy


class XIOFCDriver(XIOISEDriver):
    driver_volume_type = "fibre_channel"
    storage_protocol = "fibre_channel"

    def endpoints(self, connector: dict) -> list[str]:
        wwpns = [normalize_wwn(w) for w in connector.get("wwpns") or []]
        if not wwpns or any(len(w) != 16 for w in wwpns):
            raise exception.InvalidInput(
                reason="an FC connection needs the initiator's WWPNs (--wwpn, 16 hex "
                f"digits each); got {connector.get('wwpns') or 'none'}")
        return wwpns

    def target_wwns(self) -> list[str]:
        resp = self.client.get(self.client.array_path("controllers"))
        wwns = [normalize_wwn(w.text or "") for w in resp.root.iter("wwn")] \
            if resp.root is not None else []
        wwns = list(dict.fromkeys(w for w in wwns if w))
        if not wwns:
            raise exception.ISEUnsupported(reason="the array reports no FC ports")
        return wwns

    def connection_data(self, volume: str, lun: int, connector: dict) -> dict:
        targets = self.target_wwns()
        return {"target_wwn": targets, "target_lun": int(lun), "target_discovered": True,
                "initiator_target_map": {w: list(targets) for w in self.endpoints(connector)},
                "volume_id": volume, "encrypted": False, "access_mode": "rw"}

    # -- images: through a host attach (the host's FC HBAs) ------------------------
    def host_connector(self):
        """This host's FC connector, with the ``[libvirt]`` FC settings."""
        from hvplug.conf import CONF
        from hvplug.initiator.connectors.fibre_channel import FibreChannelConnector

        return FibreChannelConnector(self.execute, use_multipath=CONF.libvirt.fc_use_multipath,
                                     scan_tries=CONF.libvirt.num_fc_scan_tries)

    @contextlib.contextmanager
    def host_attached(self, volume: str, connector: dict):
        """The local block device of ``volume`` while this host is attached to it
        (the FC connector, os-brick's scan; no hypervisor involved).  If the
        LUN was attached to this host already, it is left attached."""
        attacher = self.host_connector()
        with self.presented(volume, connector) as data:
            props = dict(data)
            # A LUN this host had attached before (a guest's disk) stays attached.
            before = attacher.existing_device(props)
            device = attacher.connect_volume(props)
            try:
                yield device.path
            finally:
                if before is None:
                    attacher.disconnect_volume(props, device)

    def copy_image_to_volume(self, image: str, volume: str, connector: dict,
                             progress=None) -> None:
        """Write local ``image`` (raw or qcow2) into ``volume`` through this host."""
        self.check_fits(image, volume)
        with self.host_attached(volume, connector) as device:
            iscsi_copy.copy_to_device(image, device, progress, self.execute)

    def copy_volume_to_image(self, volume: str, image: str, fmt: str, connector: dict,
                             progress=None) -> None:
        """Write ``volume`` into a new local image of format ``fmt`` through this host."""
        self.volume(volume)
        with self.host_attached(volume, connector) as device:
            iscsi_copy.copy_from_device(device, image, fmt, progress, self.execute)
