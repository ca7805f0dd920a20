"""The simulated array: volumes, hosts, allocations and pools, persisted as JSON.

Every change runs under one lock and is written to ``<state_dir>/state.json``
(atomically, mode 0600: it holds the CHAP secret) before the answer goes
out, so a restarted simulator carries on where it stopped.  Slow array work
(creating, preparing, committing, deleting) completes ``delay`` seconds
later in a timer; a restart completes what was under way at once.
"""

import json
import logging
import os
import secrets
import threading
import uuid
from pathlib import Path

from ise_sim.common import (
    CREATING,
    DELETING,
    GIB,
    NOT_VALID,
    OPERATIONAL,
    PREPARED,
    RAID_FACTOR,
    SimError,
    integer,
    required,
)
from ise_sim.hosts import Presentations

LOG = logging.getLogger(__name__)


class Array(Presentations):
    """The array's state and operations; ``exporter`` serves iSCSI (or None)."""

    def __init__(self, state_dir: str, delay: float = 0.2, exporter_factory=None,
                 pools: int = 1, pool_size_gb: int = 1024):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "volumes").mkdir(exist_ok=True)
        self.delay = delay
        self.lock = threading.RLock()
        self._timers: set[threading.Timer] = set()
        self.data = self._load() or self._fresh(pools, pool_size_gb)
        self._finish_pending()
        self.exporter = exporter_factory(self.iqn) if exporter_factory else None
        self.save()

    # -- persistence -----------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.dir / "state.json"

    def _load(self) -> dict | None:
        if not self.path.exists():
            return None
        return json.loads(self.path.read_text())

    def _fresh(self, pools: int, pool_size_gb: int) -> dict:
        gid = uuid.uuid4().hex[:16].upper()
        return {
            "globalid": gid,
            "chap": {"enabled": True, "username": f"isesim-{gid[:8].lower()}",
                     "password": secrets.token_urlsafe(12)},
            "pools": {str(i): {"name": f"Pool {i}", "size": pool_size_gb}
                      for i in range(1, pools + 1)},
            "volumes": {}, "hosts": {}, "allocations": {},
        }

    def save(self) -> None:
        with self.lock:
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)

    def _finish_pending(self) -> None:
        for vol in list(self.data["volumes"].values()):
            if vol["status"] == DELETING:
                self._remove_volume(vol["id"])
            elif vol["status"] == CREATING:
                vol["status"] = PREPARED if vol.get("prepared") else OPERATIONAL

    # -- identity ----------------------------------------------------------------
    @property
    def gid(self) -> str:
        return self.data["globalid"]

    @property
    def iqn(self) -> str:
        return f"iqn.2004-01.com.xiotech:ise.{self.gid.lower()}"

    @property
    def wwns(self) -> list[str]:
        base = int(self.gid[:10], 16)
        return [f"5001f0{(base + i) & 0xffffffffff:010x}" for i in range(4)]

    def chap(self) -> dict:
        return dict(self.data["chap"])

    def set_chap(self, enabled: bool, username: str | None, password: str | None) -> None:
        with self.lock:
            chap = self.data["chap"]
            chap["enabled"] = enabled
            chap["username"] = username or chap["username"]
            chap["password"] = password or chap["password"]
            self.save()
            self._sync_exports()

    # -- async work --------------------------------------------------------------
    def later(self, func, *args) -> None:
        def run():
            with self.lock:
                self._timers.discard(timer)
                func(*args)
                self.save()
        timer = threading.Timer(self.delay, run)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _set_status(self, vol_id: str, status: str) -> None:
        vol = self.data["volumes"].get(vol_id)
        if vol is not None and vol["status"] != DELETING:
            vol["status"] = status

    # -- pools -------------------------------------------------------------------
    def pool_usage(self, pool_id: str) -> dict:
        """Raw GB used and, per RAID level, user GB used and available."""
        size = self.data["pools"][pool_id]["size"]
        used_by = dict.fromkeys(RAID_FACTOR, 0)
        raw = 0.0
        for vol in self.data["volumes"].values():
            if vol["pool"] == pool_id:
                used_by[vol["redundancy"]] += vol["size"]
                raw += vol["size"] * RAID_FACTOR[vol["redundancy"]]
        free = max(size - int(-(-raw // 1)), 0)
        return {"size": size, "used": size - free, "free": free, "used_by": used_by,
                "free_by": {r: int(free // f) for r, f in RAID_FACTOR.items()}}

    def _find_pool(self, ref: str) -> str:
        for pid, pool in self.data["pools"].items():
            if ref in (pid, pool["name"]):
                return pid
        raise SimError(400, f"Pool {ref} does not exist")

    def _reserve(self, pool_id: str, size: int, redundancy: str) -> None:
        need = size * RAID_FACTOR[redundancy]
        if need > self.pool_usage(pool_id)["free"]:
            raise SimError(400, f"Insufficient capacity in pool {pool_id} for {size} GB")

    # -- volumes -----------------------------------------------------------------
    def volume(self, vol_id: str) -> dict:
        vol = self.data["volumes"].get(vol_id)
        if vol is None:
            raise SimError(404, f"Volume {vol_id} not found")
        return vol

    def volume_by_name(self, name: str) -> dict | None:
        return next((v for v in self.data["volumes"].values() if v["name"] == name), None)

    def volume_file(self, vol: dict) -> Path:
        return self.dir / "volumes" / f"{vol['id']}.img"

    def create_volume(self, p: dict) -> dict:
        with self.lock:
            name, size = required(p, "name"), integer(p, "size")
            if size <= 0:
                raise SimError(400, "size must be a positive number of GB")
            redundancy = p.get("redundancy") or "1"
            if redundancy not in RAID_FACTOR:
                raise SimError(400, f"Invalid redundancy {redundancy}")
            pool_id = self._find_pool(p.get("pool") or "1")
            vol = self._new_volume(name, size, pool_id, redundancy, p)
            with open(self.volume_file(vol), "wb") as f:
                f.truncate(size * GIB)
            self.save()
            self.later(self._set_status, vol["id"], OPERATIONAL)
            return vol

    def _new_volume(self, name: str, size: int, pool_id: str, redundancy: str,
                    p: dict, **extra) -> dict:
        if self.volume_by_name(name):
            raise SimError(409, f"Volume {name} already exists")
        self._reserve(pool_id, size, redundancy)
        vol = {"id": uuid.uuid4().hex, "name": name, "size": size, "pool": pool_id,
               "redundancy": redundancy, "status": CREATING, "type": "volume",
               "lun": None, **_qos(p), "affinity": p.get("affinity", ""),
               "alloctype": p.get("alloctype", ""), **extra}
        self.data["volumes"][vol["id"]] = vol
        return vol

    def prepare(self, src_id: str, p: dict) -> dict:
        """POST on a volume: prepare a snapshot or clone of it (202)."""
        with self.lock:
            src = self.volume(src_id)
            kind = p.get("type", "")
            if kind not in ("snapshot", "clone"):
                raise SimError(400, "type must be snapshot or clone")
            if src["status"] != OPERATIONAL:
                raise SimError(400, f"Volume {src['name']} is {NOT_VALID}")
            vol = self._new_volume(required(p, "name"), src["size"], src["pool"],
                                   src["redundancy"], p, type=kind, parent=src["id"],
                                   prepared=True)
            self.save()
            self.later(self._set_status, vol["id"], PREPARED)
            return vol

    def commit(self, vol: dict, kind: str) -> None:
        """PUT ?snapshot=true / ?clone=true: copy the data, then OPERATIONAL."""
        if vol["status"] != PREPARED or vol["type"] != kind:
            raise SimError(400, f"Volume {vol['name']} is {NOT_VALID} for a {kind} commit")
        src = self.data["volumes"].get(vol["parent"])
        if src is None:
            raise SimError(400, f"The source of {vol['name']} is gone")
        sparse_copy(self.volume_file(src), self.volume_file(vol))
        vol["status"] = CREATING
        vol["prepared"] = False
        self.later(self._set_status, vol["id"], OPERATIONAL)

    def modify(self, vol_id: str, p: dict) -> dict:
        with self.lock:
            vol = self.volume(vol_id)
            kinds = [k for k in ("snapshot", "clone") if p.get(k) == "true"]
            if kinds:
                self.commit(vol, kinds[0])
            elif not ({"size", "name"} | set(_qos(p))) & set(p):
                raise SimError(400, "No valid parameter to modify")
            if "name" in p and p["name"] != vol["name"]:
                if self.volume_by_name(p["name"]):
                    raise SimError(409, f"Volume {p['name']} already exists")
                vol["name"] = p["name"]
            if "size" in p:
                self._extend(vol, integer(p, "size"))
            vol.update({k: v for k, v in _qos(p).items() if k in p})
            self.save()
            return vol

    def _extend(self, vol: dict, size: int) -> None:
        if vol["status"] != OPERATIONAL:
            raise SimError(400, f"Volume {vol['name']} is {NOT_VALID}")
        if size < vol["size"]:
            raise SimError(400, f"Cannot shrink {vol['name']} from {vol['size']} GB")
        self._reserve(vol["pool"], size - vol["size"], vol["redundancy"])
        vol["size"] = size
        os.truncate(self.volume_file(vol), size * GIB)
        if vol["lun"] is not None and self.exporter:
            self.exporter.refresh_lun(vol["lun"], str(self.volume_file(vol)))

    def delete_volume(self, vol_id: str) -> None:
        with self.lock:
            vol = self.volume(vol_id)
            if vol["status"] == DELETING:
                return
            if any(a["volume"] == vol_id for a in self.data["allocations"].values()):
                raise SimError(400, f"Volume {vol['name']} is presented; {NOT_VALID}")
            vol["status"] = DELETING
            self.save()
            self.later(self._remove_volume, vol_id)

    def _remove_volume(self, vol_id: str) -> None:
        vol = self.data["volumes"].pop(vol_id, None)
        if vol is not None:
            self.volume_file(vol).unlink(missing_ok=True)

    def shutdown(self) -> None:
        """Stop timers (their work is finished at the next start) and unexport."""
        with self.lock:
            for timer in list(self._timers):
                timer.cancel()
            self.save()
            self.unexport_all()

    def reset(self) -> None:
        with self.lock:
            for timer in list(self._timers):
                timer.cancel()
            for vol in list(self.data["volumes"]):
                self._remove_volume(vol)
            self.data.update(volumes={}, hosts={}, allocations={})
            self.save()
            self.unexport_all()


def _qos(p: dict) -> dict:
    return {k: p.get(k, "") for k in ("IOPSmin", "IOPSmax", "IOPSburst")}


def sparse_copy(src: Path, dst: Path, chunk: int = 8 << 20) -> None:
    """Copy ``src`` to ``dst`` keeping holes (SEEK_DATA / SEEK_HOLE)."""
    size = src.stat().st_size
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            fin.seek(start)
            fout.seek(start)
            left = end - start
            while left > 0:
                data = fin.read(min(chunk, left))
                fout.write(data)
                left -= len(data)
            offset = end
