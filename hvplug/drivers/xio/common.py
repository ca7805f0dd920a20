"""``XIOISEDriver``: the volume API mapped onto the ISE REST API.

The protocol classes (``iscsi.XIOISCSIDriver``, ``fc.XIOFCDriver``) add only
what their ``connection_info`` needs; everything else lives here::

    driver = backends.load_driver("ise1")
    driver.create_volume("vol1", 10)
    driver.create_snapshot("vol1", "snap1")
    driver.create_volume_from_snapshot("snap1", "vol2")
    info = driver.initialize_connection("vol2", {"initiator": IQN, "host": "cmp1"})
    driver.terminate_connection("vol2", {"initiator": IQN})

Volumes are named by the caller; snapshots and clones are ISE volumes too
(prepared, then committed).  Asynchronous steps are polled, each at most
``ise_completion_retries`` times.
"""

import contextlib
import hashlib
import logging
import math
import re

from hvplug import exception
from hvplug.conf.xio import xio_opts
from hvplug.drivers.xio.client import ISEClient, ISEResponse, failed, text
from hvplug.image import iscsi_copy

GIB = 1 << 30

LOG = logging.getLogger(__name__)

OPERATIONAL = "OPERATIONAL"
PREPARED = "PREPARED"
CAP_QOS = "49004"


def normalize_wwn(wwn: str) -> str:
    """``"50:01:43:80:..."`` → ``"5001438..."`` (how the ISE writes WWNs)."""
    return re.sub(r"[^0-9a-f]", "", wwn.lower())


def _status(vol) -> str:
    status = vol.find("status")
    if status is None:
        return ""
    return (status.get("string") or status.text or "").strip().upper()


def _gb(elem) -> float:
    """A capacity element: ``total`` attribute, ``<total>`` child, or text."""
    if elem is None:
        return 0.0
    value = elem.get("total") or text(elem, "total") or (elem.text or "").strip() or "0"
    try:
        return float(value)
    except ValueError:
        return 0.0


class XIOISEDriver:
    """The X-IO ISE volume driver, protocol-independent part."""

    VERSION = "1.0.0"
    driver_opts = xio_opts
    driver_volume_type = ""  # connection_info's, set by the protocol classes
    storage_protocol = ""

    def __init__(self, conf, client: ISEClient | None = None, execute=None):
        self.conf = conf
        self.execute = execute
        self.client = client or ISEClient(conf)
        self.backend_name = (getattr(conf, "volume_backend_name", None)
                             or getattr(conf, "backend_name", None) or "ise")

    # -- volumes -------------------------------------------------------------
    def find_volume(self, name: str):
        """The ``<volume>`` element named ``name``, or None."""
        resp = self.client.get(self.client.array_path("volumes"), name=name)
        if resp.status == 404:
            return None
        if resp.status != 200 or resp.root is None:
            raise failed(resp, "GET", "volumes")
        for vol in resp.root.iter("volume"):
            if text(vol, "name", name) == name:
                return vol
        return None

    def volume(self, name: str):
        vol = self.find_volume(name)
        if vol is None:
            raise exception.ISEVolumeNotFound(name=name)
        return vol

    def describe(self, name: str) -> dict:
        vol = self.volume(name)
        return {"name": name, "size_gb": int(float(text(vol, "size", "0") or 0)),
                "status": _status(vol), "url": vol.get("self")}

    def _wait_status(self, name: str, wanted: str, action: str) -> None:
        seen = {"status": "not found"}

        def check() -> bool:
            vol = self.find_volume(name)
            seen["status"] = _status(vol) if vol is not None else "not found"
            return wanted in seen["status"]
        self.client.wait(check, action, lambda: f"{name} is {seen['status']}")

    def create_volume(self, name: str, size_gb: int) -> dict:
        if self.find_volume(name) is not None:
            raise exception.ISEVolumeExists(name=name)
        params = {"name": name, "size": str(size_gb),
                  "redundancy": self.conf.ise_raid_level}
        if self.conf.ise_default_pool:
            params["pool"] = self.conf.ise_default_pool
        resp = self.client.post(self.client.array_path("volumes"), params,
                                recheck=lambda: self._existing(name))
        if resp.status not in (200, 201, 202):
            raise failed(resp, "POST", "volumes")
        self._wait_status(name, OPERATIONAL, f"make volume {name} operational")
        return self.describe(name)

    def _existing(self, name: str):
        """After a failed POST: a stand-in response if ``name`` now exists."""
        vol = self.find_volume(name)
        if vol is None:
            return None
        LOG.info("ISE: %s exists after a failed attempt; not creating it again", name)
        return ISEResponse(201, None, vol.get("self"))

    def delete_volume(self, name: str) -> None:
        """Delete ``name`` and wait until it is gone; absent already is fine."""
        vol = self.find_volume(name)
        if vol is None:
            LOG.info("ISE: volume %s is already gone", name)
            return
        resp = self.client.delete(vol.get("self"))
        if resp.status not in (200, 202, 204, 404):
            raise failed(resp, "DELETE", vol.get("self"))

        def gone() -> bool:
            return self.find_volume(name) is None
        self.client.wait(gone, f"delete volume {name}", lambda: f"{name} still exists")

    def extend_volume(self, name: str, size_gb: int) -> dict:
        vol = self.volume(name)
        current = int(float(text(vol, "size", "0") or 0))
        if size_gb < current:
            raise exception.InvalidInput(
                reason=f"volume {name} is {current} GB; it can only grow, not shrink "
                f"to {size_gb} GB")
        if size_gb > current:
            resp = self.client.put(vol.get("self"), size=str(size_gb))
            if resp.status not in (200, 201, 202):
                raise failed(resp, "PUT", vol.get("self"))

            def grown() -> bool:
                return int(float(text(self.volume(name), "size", "0") or 0)) >= size_gb
            self.client.wait(grown, f"extend {name} to {size_gb} GB",
                             lambda: f"{name} is {self.describe(name)['size_gb']} GB")
        return self.describe(name)

    # -- snapshots and clones ------------------------------------------------
    def _copy(self, source: str, name: str, kind: str) -> dict:
        """Prepare a ``kind`` (snapshot|clone) of ``source``, then commit it."""
        src = self.volume(source)
        if self.find_volume(name) is not None:
            raise exception.ISEVolumeExists(name=name)
        resp = self.client.post(src.get("self"), {"name": name, "type": kind},
                                recheck=lambda: self._existing(name))
        if resp.status not in (200, 201, 202):
            raise failed(resp, "POST", src.get("self"))
        self._wait_status(name, PREPARED, f"prepare {kind} {name} of {source}")
        url = resp.location or self.volume(name).get("self")
        resp = self.client.request("PUT", url, {kind: "true"})
        if resp.status not in (200, 201, 202):
            raise failed(resp, "PUT", url)
        self._wait_status(name, OPERATIONAL, f"make {kind} {name} operational")
        return self.describe(name)

    def create_snapshot(self, volume: str, snapshot: str) -> dict:
        return self._copy(volume, snapshot, "snapshot")

    def delete_snapshot(self, snapshot: str) -> None:
        self.delete_volume(snapshot)

    def create_volume_from_snapshot(self, snapshot: str, name: str,
                                    size_gb: int | None = None) -> dict:
        made = self._copy(snapshot, name, "clone")
        if size_gb and size_gb > made["size_gb"]:
            made = self.extend_volume(name, size_gb)
        return made

    def create_cloned_volume(self, source: str, name: str,
                             size_gb: int | None = None) -> dict:
        return self.create_volume_from_snapshot(source, name, size_gb)

    # -- stats ---------------------------------------------------------------
    def get_volume_stats(self) -> dict:
        """A fresh dict on every call, one entry per pool."""
        resp = self.client.get("/storage/pools")
        if resp.status != 200 or resp.root is None:
            raise failed(resp, "GET", "/storage/pools")
        qos = CAP_QOS in self.client.array.capabilities
        pools = [self._pool_stats(pool, qos) for pool in resp.root.iter("pool")]
        return {
            "vendor_name": "X-IO", "driver_version": self.VERSION,
            "volume_backend_name": self.backend_name,
            "storage_protocol": self.storage_protocol,
            "total_capacity_gb": sum(p["total_capacity_gb"] for p in pools),
            "free_capacity_gb": sum(p["free_capacity_gb"] for p in pools),
            "reserved_percentage": 0, "QoS_support": qos, "pools": pools,
        }

    @staticmethod
    def _pool_stats(pool, qos: bool) -> dict:
        free, used = _gb(pool.find("available")), _gb(pool.find("used"))
        status = pool.find("status")
        return {"pool_name": text(pool, "name"), "pool_id": text(pool, "id"),
                "status": (status.get("string") or "") if status is not None else "",
                "total_capacity_gb": free + used, "free_capacity_gb": free,
                "reserved_percentage": 0, "QoS_support": qos}

    # -- host objects and presentation ---------------------------------------
    def endpoints(self, connector: dict) -> list[str]:
        """The connector's identities as the ISE stores them; protocol-specific."""
        raise NotImplementedError

    def find_host(self, endpoints: list[str]):
        resp = self.client.get(self.client.array_path("hosts"))
        if resp.status == 404 or resp.root is None:
            return None
        wanted = {normalize_wwn(e) if self._is_wwn(e) else e.lower() for e in endpoints}
        for host in resp.root.iter("host"):
            known = {text(e, "globalid") or (e.text or "").strip()
                     for e in host.iter("endpoint")}
            known = {normalize_wwn(k) if self._is_wwn(k) else k.lower() for k in known if k}
            if wanted & known:
                return host
        return None

    @staticmethod
    def _is_wwn(value: str) -> bool:
        return bool(re.fullmatch(r"(?:[0-9a-fA-F]{2}:?){8}", value))

    def ensure_host(self, connector: dict):
        """The host object of ``connector``, created (os=openstack) if missing."""
        endpoints = self.endpoints(connector)
        host = self.find_host(endpoints)
        if host is not None:
            # the ISE reports a host's OS type as <type>
            if (text(host, "type") or "openstack").lower() != "openstack":
                self.client.put(host.get("self"), os="openstack")
            return host
        digest = hashlib.sha1(" ".join(sorted(endpoints)).encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"{connector.get('host') or 'hvplug'}-{digest}"
        params = [("name", name), *(("endpoint", e) for e in endpoints), ("os", "openstack")]
        resp = self.client.post(self.client.array_path("hosts"), params,
                                recheck=lambda: self._host_response(endpoints))
        if resp.status not in (200, 201, 409):
            raise failed(resp, "POST", "hosts")
        host = self.find_host(endpoints)
        if host is None:
            raise exception.ISERequestFailed(method="POST", path="hosts", status=resp.status,
                                             reason=f"host {name} was not created")
        return host

    def _host_response(self, endpoints):
        host = self.find_host(endpoints)
        if host is None:
            return None
        return ISEResponse(201, None, host.get("self"))

    def find_allocation(self, volume: str, hostname: str):
        resp = self.client.get(self.client.array_path("allocations"),
                               name=volume, hostname=hostname)
        if resp.status == 404 or resp.root is None:
            return None
        for alloc in resp.root.iter("allocation"):
            return alloc
        return None

    def host_allocations(self, hostname: str) -> list:
        resp = self.client.get(self.client.array_path("allocations"), hostname=hostname)
        if resp.status == 404 or resp.root is None:
            return []
        return list(resp.root.iter("allocation"))

    def present(self, volume: str, hostname: str) -> int:
        """Allocate ``volume`` to ``hostname``; its LUN, as an int."""
        self.volume(volume)
        alloc = self.find_allocation(volume, hostname)
        if alloc is None:
            resp = self.client.post(
                self.client.array_path("allocations"),
                {"volumename": volume, "hostname": hostname},
                recheck=lambda: self._allocation_response(volume, hostname))
            if resp.status not in (200, 201, 409):
                raise failed(resp, "POST", "allocations")
            alloc = self.find_allocation(volume, hostname)
        if alloc is None or not text(alloc, "lun").isdigit():
            raise exception.ISERequestFailed(method="POST", path="allocations", status=201,
                                             reason=f"no LUN for {volume} on {hostname}")
        return int(text(alloc, "lun"))

    def _allocation_response(self, volume, hostname):
        alloc = self.find_allocation(volume, hostname)
        if alloc is None:
            return None
        return ISEResponse(201, None, alloc.get("self"))

    def initialize_connection(self, volume: str, connector: dict) -> dict:
        host = self.ensure_host(connector)
        lun = self.present(volume, text(host, "name"))
        return {"driver_volume_type": self.driver_volume_type,
                "data": self.connection_data(volume, lun, connector),
                "serial": volume}

    def terminate_connection(self, volume: str, connector: dict) -> None:
        """Unpresent; the host object goes with its last allocation."""
        host = self.find_host(self.endpoints(connector))
        if host is None:
            return
        hostname = text(host, "name")
        alloc = self.find_allocation(volume, hostname)
        if alloc is not None:
            resp = self.client.delete(alloc.get("self"))
            if resp.status not in (200, 202, 204, 404):
                raise failed(resp, "DELETE", alloc.get("self"))
        if not self.host_allocations(hostname):
            resp = self.client.delete(host.get("self"))
            if resp.status not in (200, 202, 204, 404):
                raise failed(resp, "DELETE", host.get("self"))

    def connection_data(self, volume: str, lun: int, connector: dict) -> dict:
        raise NotImplementedError

    @contextlib.contextmanager
    def presented(self, volume: str, connector: dict):
        """``connection_info["data"]`` while ``volume`` is presented to
        ``connector``; a presentation made here is undone afterwards."""
        host = self.find_host(self.endpoints(connector))
        had = host is not None and self.find_allocation(volume, text(host, "name")) is not None
        data = self.initialize_connection(volume, connector)["data"]
        try:
            yield data
        finally:
            if not had:
                self.terminate_connection(volume, connector)

    def check_fits(self, image: str, volume: str) -> None:
        """InvalidInput unless ``image``'s virtual size fits in ``volume``."""
        need = math.ceil(iscsi_copy.image_info(image)["virtual-size"] / GIB)
        have = self.describe(volume)["size_gb"]
        if need > have:
            raise exception.InvalidInput(
                reason=f"image {image} needs {need} GB but volume {volume} is {have} GB; "
                "extend the volume first")
