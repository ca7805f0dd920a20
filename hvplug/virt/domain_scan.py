"""The host-wide scan of every XML document libvirt may start a domain from.

Counting a secret's users needs every domain's live XML, persistent
configuration, managed save image and snapshot metadata.  Four listing calls
pick the domains (``listAllDomains`` with ACTIVE, PERSISTENT, MANAGEDSAVE,
HAS_SNAPSHOT); the documents are then fetched in parallel over the one
connection, which libvirtd answers concurrently.

Scans are shared between threads: a caller gets the result of a scan that
*started after its call*, so a scan already under way when it asks is not
enough, but one that starts while it waits serves every waiter at once.
That is exactly as fresh as a scan of its own (a caller holds its secret's
lock when it asks, so no hvplug attach of that secret can be missed), and
P threads detaching at once scan the host about once, not P times.

On ``qemu:///system`` a document is also not fetched again while the file
libvirtd itself keeps for it is unchanged (:class:`DocumentCache`): libvirtd
rewrites ``/run/libvirt/qemu/<name>.xml`` (by a rename, so the inode
changes) before any change to a running domain's definition returns, and
likewise ``/etc/libvirt/qemu/<name>.xml`` for the persistent one and the
managed save image.  Only their ``stat`` is read, never their content; a
missing file, another URI, or an entry older than ``[libvirt]
domain_scan_cache_ttl`` means: fetch.  That keeps the scan's cost nearly
flat in the number of unchanged domains (see ``doc/performance.md``).
"""

import os
import threading
import time
from typing import Any, NamedTuple

from hvplug.conf import CONF

# A domain, image or snapshot deleted between the listing and the fetch.
_VANISHED = ("VIR_ERR_NO_DOMAIN", "VIR_ERR_NO_DOMAIN_SNAPSHOT", "VIR_ERR_OPERATION_INVALID")


class DomainDocument(NamedTuple):
    """One XML document of a domain that libvirt may start from.

    ``where`` is ``live``, ``config``, ``managed-save`` or ``snapshot NAME``.
    """

    domain: str
    where: str
    xml: str


class DomainScanner:
    """Scans for one Host, shared by its threads (see the module docstring)."""

    def __init__(self, host):
        self.host = host
        self.cache = DocumentCache(host.uri)
        self._cond = threading.Condition()
        self._running_since: float | None = None  # start of the scan under way
        self._done: tuple[float, list[DomainDocument]] | None = None  # (start, result)

    def documents(self) -> list[DomainDocument]:
        asked = time.monotonic()
        with self._cond:
            while True:
                if self._done is not None and self._done[0] >= asked:
                    return self._done[1]
                if self._running_since is None:
                    break
                self._cond.wait()
            started = self._running_since = time.monotonic()
        try:
            result = self._scan()
        except BaseException:
            with self._cond:
                self._running_since = None
                self._cond.notify_all()
            raise
        with self._cond:
            self._running_since = None
            self._done = (started, result)
            self._cond.notify_all()
        return result

    def _scan(self) -> list[DomainDocument]:
        lib = self.host.libvirt
        kinds = ((lib.VIR_CONNECT_LIST_DOMAINS_ACTIVE, "live"),
                 (lib.VIR_CONNECT_LIST_DOMAINS_PERSISTENT, "config"),
                 (lib.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE, "managed-save"),
                 (lib.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT, "snapshots"))
        pool = self.host.executor()

        def listing(kind) -> list[tuple[str, Any, str]]:
            flag, where = kind
            return [(dom.name(), dom, where)
                    for dom in self.host.call(lambda conn: conn.listAllDomains(flag))]
        # The four listings at once: the scan's latency is one round trip, not four.
        jobs = [job for listed in pool.map(listing, kinds) for job in listed]
        found: list[list[DomainDocument] | None] = [self._cached(job) for job in jobs]
        missing = [i for i, docs in enumerate(found) if docs is None]
        if len(missing) <= 1:
            for i in missing:
                found[i] = self._fetch(jobs[i])
        else:
            for i, docs in zip(missing, pool.map(self._fetch, [jobs[i] for i in missing]),
                               strict=True):
                found[i] = docs
        return [doc for docs in found for doc in docs or ()]

    def _cached(self, job: tuple[str, Any, str]) -> list[DomainDocument] | None:
        name, dom, where = job
        return self.cache.get((dom.UUIDString(), where), self.cache.stamp(name, where))

    def _fetch(self, job: tuple[str, Any, str]) -> list[DomainDocument]:
        name, dom, where = job
        stamp = self.cache.stamp(name, where)
        docs = self._read(name, dom, where)
        # The handle keeps the uuid: no call to libvirtd.
        self.cache.put((dom.UUIDString(), where), stamp, self.cache.stamp(name, where), docs)
        return docs

    def live_xml(self, name: str, dom) -> str:
        """``dom``'s live XML, fetched now and kept for the next scan."""
        docs = self._fetch((name, dom, "live"))
        if not docs:  # it stopped meanwhile: let the caller see libvirt's error
            return dom.XMLDesc(0)
        return docs[0].xml

    def _read(self, name: str, dom, where: str) -> list[DomainDocument]:
        lib = self.host.libvirt
        try:
            if where == "live":
                return [DomainDocument(name, where, dom.XMLDesc(0))]
            if where == "config":
                return [DomainDocument(name, where, dom.XMLDesc(lib.VIR_DOMAIN_XML_INACTIVE))]
            if where == "managed-save":
                return [DomainDocument(name, where, dom.managedSaveGetXMLDesc(0))]
            return [DomainDocument(name, f"snapshot {snap.getName()}", snap.getXMLDesc(0))
                    for snap in dom.listAllSnapshots(0)]
        except lib.libvirtError as exc:
            if any(self.host.is_code(exc, code) for code in _VANISHED):
                return []
            raise


# Where qemu:///system's libvirtd keeps each kind of document (Debian's and
# upstream's default paths); snapshots are always fetched.
_QEMU_SYSTEM_FILES = {"live": "/run/libvirt/qemu/{}.xml",
                      "config": "/etc/libvirt/qemu/{}.xml",
                      "managed-save": "/var/lib/libvirt/qemu/save/{}.save"}


class DocumentCache:
    """Documents of unchanged domains, keyed by the stat of libvirtd's file.

    A stamp is ``(inode, mtime_ns, size)`` of the file, taken before the
    fetch; the result is kept only if the file is still the same after it,
    so a change racing the fetch is fetched again next time.
    """

    def __init__(self, uri: str):
        self.enabled = uri == "qemu:///system"
        self._entries: dict[tuple, tuple[tuple, float, list]] = {}
        self._lock = threading.Lock()

    def stamp(self, name: str, where: str) -> tuple | None:
        pattern = _QEMU_SYSTEM_FILES.get(where)
        if not self.enabled or pattern is None or not CONF.libvirt.domain_scan_cache_ttl:
            return None
        try:
            info = os.stat(pattern.format(name))
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def get(self, key: tuple, stamp: tuple | None) -> list | None:
        if stamp is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] != stamp:
            return None
        if time.monotonic() - entry[1] > CONF.libvirt.domain_scan_cache_ttl:
            return None
        return entry[2]

    def put(self, key: tuple, before: tuple | None, after: tuple | None, docs: list) -> None:
        with self._lock:
            if before is not None and before == after:
                self._entries[key] = (before, time.monotonic(), docs)
            else:
                self._entries.pop(key, None)
