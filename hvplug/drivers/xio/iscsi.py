"""``XIOISCSIDriver``: the ISE over iSCSI.

``initialize_connection("vol1", {"initiator": "iqn.1993-08.org.debian:01:ab"})``
returns what ``hvplug attach --connection-info -`` consumes::

    {"driver_volume_type": "iscsi",
     "data": {"target_portal": "192.0.2.60:3260",
              "target_iqn": "iqn.2004-08.com.x-io:ise.xyz", "target_lun": 1,
              "target_discovered": False, "volume_id": "vol1",
              "auth_method": "CHAP", "auth_username": "u", "auth_password": "p",
              "encrypted": False, "access_mode": "rw"},
     "serial": "vol1"}

The CHAP keys appear only when the array's CHAP-in is enabled.  A
sendtargets discovery on ``iscsi_ip_address`` returns every portal of the
ISE on that subnet, so a multipath host finds the others itself.
"""


from hvplug import exception
from hvplug.drivers.xio.client import text
from hvplug.drivers.xio.common import XIOISEDriver
from hvplug.image import iscsi_copy
from hvplug.utils import portals

ISCSI_PORT = 3260


class XIOISCSIDriver(XIOISEDriver):
    driver_volume_type = "iscsi"
    storage_protocol = "iSCSI"

    def endpoints(self, connector: dict) -> list[str]:
        initiator = connector.get("initiator")
        if not initiator:
            raise exception.InvalidInput(
                reason="an iSCSI connection needs the initiator's IQN (--initiator)")
        return [initiator]

    def target_iqn(self) -> str:
        """The IQN of the ioport that carries ``iscsi_ip_address``."""
        address = self._iscsi_address()
        resp = self.client.get(self.client.array_path("controllers"))
        seen = []
        for ioport in resp.root.iter("ioport") if resp.root is not None else ():
            ips = [(ip.text or "").strip() for ip in ioport.iter("ipaddress")]
            seen.extend(ips)
            if address in ips and text(ioport, "endpoint/globalid"):
                return text(ioport, "endpoint/globalid")
        raise exception.ISEConfigError(
            backend=self.backend_name,
            reason=f"no iSCSI port of the ISE has iscsi_ip_address {address} "
            f"(its ports: {', '.join(sorted(set(seen))) or 'none'})")

    def _iscsi_address(self) -> str:
        if not self.conf.iscsi_ip_address:
            raise exception.ISEConfigError(backend=self.backend_name,
                                           reason="iscsi_ip_address is not set")
        return self.conf.iscsi_ip_address.strip("[]")

    def chap(self) -> dict:
        """CHAP keys of connection_info when the array's CHAP-in is on, else {}."""
        resp = self.client.get(self.client.array_path("ionetworks"))
        chapin = resp.root.find(".//chapin") if resp.root is not None else None
        if chapin is None or chapin.get("value") != "1":
            return {}
        return {"auth_method": "CHAP", "auth_username": text(chapin, "username"),
                "auth_password": text(chapin, "password")}

    def connection_data(self, volume: str, lun: int, connector: dict) -> dict:
        data = {"target_portal": portals.format_portal(self._iscsi_address(), ISCSI_PORT),
                "target_iqn": self.target_iqn(), "target_lun": int(lun),
                "target_discovered": False, "volume_id": volume,
                "encrypted": False, "access_mode": "rw"}
        data.update(self.chap())
        return data

    # -- images: qemu-img straight over iSCSI, no host attach ------------------
    def copy_image_to_volume(self, image: str, volume: str, connector: dict,
                             progress=None) -> None:
        """Write local ``image`` (raw or qcow2) into ``volume``."""
        self.check_fits(image, volume)
        with self.presented(volume, connector) as data:
            iscsi_copy.copy_to_volume(image, data, initiator=connector["initiator"],
                                      execute=self.execute, progress=progress)

    def copy_volume_to_image(self, volume: str, image: str, fmt: str,
                             connector: dict, progress=None) -> None:
        """Write ``volume`` into a new local image of format ``fmt``."""
        self.volume(volume)
        with self.presented(volume, connector) as data:
            iscsi_copy.copy_from_volume(data, image, fmt, initiator=connector["initiator"],
                                        execute=self.execute, progress=progress)
