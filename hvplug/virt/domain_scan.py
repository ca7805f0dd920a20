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
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

# Threads that fetch the documents of one scan.
_SCAN_WORKERS = 4
# A domain, image or snapshot deleted between the listing and the fetch.
_VANISHED = ("VIR_ERR_NO_DOMAIN", "VIR_ERR_NO_DOMAIN_SNAPSHOT", "VIR_ERR_OPERATION_INVALID")


@dataclass(frozen=True)
class DomainDocument:
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

        def listing(conn) -> list[tuple[str, Any, str]]:
            wanted = []
            for flag, where in ((lib.VIR_CONNECT_LIST_DOMAINS_ACTIVE, "live"),
                                (lib.VIR_CONNECT_LIST_DOMAINS_PERSISTENT, "config"),
                                (lib.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE, "managed-save"),
                                (lib.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT, "snapshots")):
                wanted += [(dom.name(), dom, where) for dom in conn.listAllDomains(flag)]
            return wanted
        jobs = self.host.call(listing)
        if len(jobs) <= 2:
            fetched = [self._fetch(job) for job in jobs]
        else:
            with ThreadPoolExecutor(min(_SCAN_WORKERS, len(jobs))) as pool:
                fetched = list(pool.map(self._fetch, jobs))
        return [doc for docs in fetched for doc in docs]

    def _fetch(self, job: tuple[str, Any, str]) -> list[DomainDocument]:
        name, dom, where = job
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
