"""Hosts and allocations of the simulated array, and its iSCSI presentation.

A mixin of ``state.Array``: it uses the array's ``data``, ``lock``, ``save``,
``exporter`` and ``volume_file``.  Each presented volume has one LUN on the
array's one target, shared by the hosts it is presented to.
"""

import logging
import uuid

from hvplug.exception import HvplugError
from ise_sim.common import NOT_VALID, OPERATIONAL, SimError, is_iqn, required

LOG = logging.getLogger(__name__)


class Presentations:
    """Hosts, allocations and their tgtd export."""

    # -- hosts -------------------------------------------------------------------
    def host(self, host_id: str) -> dict:
        host = self.data["hosts"].get(host_id)
        if host is None:
            raise SimError(404, f"Host {host_id} not found")
        return host

    def host_by_name(self, name: str) -> dict | None:
        return next((h for h in self.data["hosts"].values()
                     if h["name"].upper() == name.upper()), None)

    def create_host(self, name: str, endpoints: list[str], os_type: str) -> dict:
        with self.lock:
            endpoints = [e for e in endpoints if e]
            if not endpoints:
                raise SimError(400, "At least one endpoint is required")
            name = name or f"host-{len(self.data['hosts']) + 1}"
            if self.host_by_name(name):
                raise SimError(409, f"Host {name} already exists")
            taken = {e.upper() for h in self.data["hosts"].values() for e in h["endpoints"]}
            if any(e.upper() in taken for e in endpoints):
                raise SimError(409, "An endpoint already belongs to another host")
            host = {"id": uuid.uuid4().hex, "name": name, "endpoints": endpoints,
                    "os": os_type or "default"}
            self.data["hosts"][host["id"]] = host
            self.save()
            return host

    def modify_host(self, host_id: str, p: dict) -> dict:
        with self.lock:
            host = self.host(host_id)
            if "os" not in p:
                raise SimError(400, "No valid parameter to modify")
            host["os"] = p["os"]
            self.save()
            return host

    def delete_host(self, host_id: str) -> None:
        with self.lock:
            host = self.host(host_id)
            if any(a["host"] == host_id for a in self.data["allocations"].values()):
                raise SimError(409, f"Host {host['name']} still has allocations")
            del self.data["hosts"][host_id]
            self.save()

    # -- allocations -------------------------------------------------------------
    def allocation(self, alloc_id: str) -> dict:
        alloc = self.data["allocations"].get(alloc_id)
        if alloc is None:
            raise SimError(404, f"Allocation {alloc_id} not found")
        return alloc

    def find_allocations(self, volume_name: str = "", hostname: str = "") -> list[dict]:
        found = []
        for alloc in self.data["allocations"].values():
            vol, host = self.data["volumes"][alloc["volume"]], self.data["hosts"][alloc["host"]]
            if volume_name and vol["name"] != volume_name:
                continue
            if hostname and host["name"].upper() != hostname.upper():
                continue
            found.append(alloc)
        return found

    def allocate(self, p: dict) -> tuple[dict, bool]:
        """Present a volume to a host; (allocation, created?)."""
        with self.lock:
            vol = self.volume_by_name(required(p, "volumename"))
            host = self.host_by_name(required(p, "hostname"))
            if vol is None or host is None:
                raise SimError(404, "No such volume" if vol is None else "No such host")
            if vol["status"] != OPERATIONAL:
                raise SimError(400, f"Volume {vol['name']} is {NOT_VALID}")
            for alloc in self.data["allocations"].values():
                if alloc["volume"] == vol["id"] and alloc["host"] == host["id"]:
                    return alloc, False
            old_lun = vol["lun"]
            vol["lun"] = self._pick_lun(vol, p.get("lun"))
            alloc = {"id": uuid.uuid4().hex, "volume": vol["id"], "host": host["id"],
                     "lun": vol["lun"]}
            self.data["allocations"][alloc["id"]] = alloc
            try:
                self._sync_exports()
            except Exception as exc:
                del self.data["allocations"][alloc["id"]]
                vol["lun"] = old_lun
                raise SimError(500, f"Presenting over iSCSI failed: {exc}") from exc
            self.save()
            return alloc, True

    def _pick_lun(self, vol: dict, wanted: str | None) -> int:
        """One LUN per volume on the array's one target, shared by its hosts."""
        used = {v["lun"] for v in self.data["volumes"].values()
                if v["lun"] is not None and v["id"] != vol["id"]}
        if wanted not in (None, ""):
            lun = int(wanted) if str(wanted).isdigit() else -1
            if lun < 1 or lun > 255 or lun in used or vol["lun"] not in (None, lun):
                raise SimError(400, f"LUN {wanted} is not available")
            return lun
        if vol["lun"] is not None:
            return vol["lun"]
        return min(set(range(1, 256)) - used)

    def deallocate(self, alloc_id: str) -> None:
        with self.lock:
            alloc = self.allocation(alloc_id)
            del self.data["allocations"][alloc_id]
            vol = self.data["volumes"][alloc["volume"]]
            if not any(a["volume"] == vol["id"] for a in self.data["allocations"].values()):
                vol["lun"] = None
            self.save()
            self._sync_exports()

    # -- iSCSI -------------------------------------------------------------------
    def _sync_exports(self) -> None:
        if self.exporter is None:
            return
        luns, initiators = {}, set()
        for alloc in self.data["allocations"].values():
            host = self.data["hosts"][alloc["host"]]
            iqns = [e for e in host["endpoints"] if is_iqn(e)]
            if iqns:
                vol = self.data["volumes"][alloc["volume"]]
                luns[vol["lun"]] = str(self.volume_file(vol))
                initiators.update(iqns)
        chap = self.data["chap"]
        self.exporter.sync(luns, initiators,
                           (chap["username"], chap["password"]) if chap["enabled"] else None)

    def restore_exports(self) -> None:
        """Export what the saved allocations present (and drop leftovers).

        Without tgtd the REST API still works; presenting answers 500."""
        with self.lock:
            try:
                self._sync_exports()
            except (HvplugError, OSError) as exc:
                LOG.error("cannot restore the iSCSI exports: %s", exc)

    def unexport_all(self) -> None:
        if self.exporter is None:
            return
        try:
            self.exporter.teardown()
        except (HvplugError, OSError) as exc:
            LOG.error("cannot remove the iSCSI exports: %s", exc)

