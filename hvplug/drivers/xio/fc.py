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

from hvplug import exception
from hvplug.drivers.xio.common import XIOISEDriver, normalize_wwn


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
