"""Host: hvplug's one wrapper around a libvirt connection.

It opens the connection lazily, reconnects once when libvirtd went away,
and turns the few libvirt errors callers act on into hvplug exceptions.
Domains are passed by name, so a retried call after a reconnect looks the
domain up again on the new connection.

>>> host = Host("qemu:///system")
>>> host.domain_state("guest1")
(True, False)
"""

import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from lxml import etree

from hvplug import exception
from hvplug.conf import CONF
from hvplug.virt.domain_scan import DomainDocument, DomainScanner
from hvplug.virt.guest_disks import target_devs

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# libvirt error codes that mean the connection itself is gone, not that the
# call was wrong; only these trigger the one reconnect.
_CONNECTION_ERRORS = ("VIR_ERR_SYSTEM_ERROR", "VIR_ERR_INVALID_CONN",
                      "VIR_ERR_NO_CONNECT", "VIR_ERR_RPC")

_USAGE_TYPES = {"volume": "VIR_SECRET_USAGE_TYPE_VOLUME",
                "ceph": "VIR_SECRET_USAGE_TYPE_CEPH",
                "iscsi": "VIR_SECRET_USAGE_TYPE_ISCSI"}

# Threads for independent libvirt calls (a scan's fetches, a view's reads):
# libvirtd answers calls on one connection concurrently.
_PARALLEL_CALLS = 4
_DETACH_FIRST_POLL = 0.005
_DETACH_MAX_POLL = 0.25


class DomainInfo(NamedTuple):
    uuid: str
    active: bool
    persistent: bool
    managed_save: bool  # has a managed save image: its next start resumes it




def import_libvirt():
    """Import libvirt-python and silence its default print-to-stderr handler."""
    libvirt = importlib.import_module("libvirt")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


class Host:
    """A libvirt host reached through ``uri`` (default ``[libvirt] connection_uri``)."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or CONF.libvirt.connection_uri
        self.libvirt = import_libvirt()
        self._conn = None
        self._domains: dict[str, tuple[Any, Any]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._scanner = DomainScanner(self)

    # -- connection -------------------------------------------------------
    def connection(self):
        """The open connection, opened on first use."""
        if self._conn is None:
            try:
                self._conn = self.libvirt.open(self.uri)
            except self.libvirt.libvirtError as exc:
                raise exception.LibvirtConnectionFailed(
                    uri=self.uri, reason=exc.get_error_message()) from None
        return self._conn

    def close(self) -> None:
        """Close the connection now: the threads of :meth:`executor` end first
        (so no call is in flight), then the domain handles it keeps, as each
        holds the connection open (libvirt closes it with the last)."""
        with self._executor_lock:
            pool, self._executor = self._executor, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._domains.clear()
        if self._conn is not None:
            try:
                self._conn.close()
            except self.libvirt.libvirtError:
                pass
            self._conn = None

    def _dropped(self, exc) -> bool:
        codes = {getattr(self.libvirt, name, None) for name in _CONNECTION_ERRORS}
        # After the first "End of file" (SYSTEM_ERROR), a dead client socket
        # answers INTERNAL_ERROR from the RPC layer: count both.
        from_rpc = exc.get_error_domain() == self.libvirt.VIR_FROM_RPC
        if exc.get_error_code() not in codes and not from_rpc:
            return False
        if self._conn is None:
            return True
        try:
            return not self._conn.isAlive()
        except self.libvirt.libvirtError:
            return True

    def call(self, func: Callable[[Any], T]) -> T:
        """Run ``func(connection)``; reconnect and retry once if the link dropped."""
        conn = self.connection()
        try:
            return func(conn)
        except self.libvirt.libvirtError as exc:
            if self._conn is not conn or not self._dropped(exc):
                raise
            LOG.warning("libvirt connection to %s dropped (%s); reconnecting once",
                        self.uri, exc.get_error_message())
            self._conn = None
            return func(self.connection())

    def is_code(self, exc, name: str) -> bool:
        """Whether libvirtError ``exc`` carries the error code called ``name``."""
        return exc.get_error_code() == getattr(self.libvirt, name)

    # -- domains ----------------------------------------------------------
    def _lookup(self, conn, name: str):
        try:
            return conn.lookupByName(name)
        except self.libvirt.libvirtError as exc:
            if self.is_code(exc, "VIR_ERR_NO_DOMAIN"):
                raise exception.DomainNotFound(domain=name, uri=self.uri) from None
            raise

    def domain_call(self, name: str, func: Callable[[Any], T]) -> T:
        """Run ``func(virDomain)`` for domain ``name``, with the reconnect rule.

        The handle is looked up once per connection and reused; a handle
        that went stale (the domain was destroyed, perhaps re-created under
        the same name) is looked up again once.
        """
        def run(conn) -> T:
            cached = self._domains.get(name)
            if cached is None or cached[0] is not conn:
                cached = self._domains[name] = (conn, self._lookup(conn, name))
            try:
                return func(cached[1])
            except self.libvirt.libvirtError as exc:
                if not self.is_code(exc, "VIR_ERR_NO_DOMAIN"):
                    raise
                del self._domains[name]
                return func(self._lookup(conn, name))
        return self.call(run)

    def domain_info(self, name: str) -> DomainInfo:
        """uuid, state and managed-save image of domain ``name``."""
        def read(dom) -> DomainInfo:
            active, persistent = bool(dom.isActive()), bool(dom.isPersistent())
            saved = bool(not active and persistent and dom.hasManagedSaveImage(0))
            return DomainInfo(dom.UUIDString(), active, persistent, saved)
        return self.domain_call(name, read)

    def domain_view(self, name: str) -> tuple[DomainInfo, str | None, str | None, str | None]:
        """State, live, persistent and managed-save XML of domain ``name``.

        The calls that do not depend on each other (isActive, isPersistent,
        XMLDesc) are made at once: under load each libvirt round trip costs
        milliseconds, and attach and detach read this first.
        """
        lib = self.libvirt

        def read(dom):
            pool = self.executor()
            calls = [pool.submit(dom.isActive), pool.submit(dom.isPersistent),
                     pool.submit(dom.XMLDesc, 0)]
            active, persistent, xml = (bool(calls[0].result()), bool(calls[1].result()),
                                       calls[2].result())
            saved = bool(not active and persistent and dom.hasManagedSaveImage(0))
            info = DomainInfo(dom.UUIDString(), active, persistent, saved)
            if not active:  # XMLDesc(0) of a shut-off domain is its definition
                return info, None, xml, dom.managedSaveGetXMLDesc(0) if saved else None
            config = dom.XMLDesc(lib.VIR_DOMAIN_XML_INACTIVE) if persistent else None
            return info, xml, config, None
        return self.domain_call(name, read)

    def executor(self) -> "ThreadPoolExecutor":
        """The threads this Host makes independent libvirt calls in."""
        from concurrent.futures import ThreadPoolExecutor  # on first use, like the pool

        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(_PARALLEL_CALLS,
                                                    thread_name_prefix="hvplug-libvirt")
            return self._executor

    def domain_uuid(self, name: str) -> str:
        """Domain ``name``'s uuid (kept in the handle: no call to libvirtd)."""
        return self.domain_call(name, lambda dom: dom.UUIDString())

    def managed_save_xml(self, name: str) -> str:
        """The domain XML inside ``name``'s managed save image."""
        return self.domain_call(name, lambda dom: dom.managedSaveGetXMLDesc(0))

    def domain_state(self, name: str) -> tuple[bool, bool]:
        """``(active, persistent)`` of domain ``name``."""
        return self.domain_call(
            name, lambda dom: (bool(dom.isActive()), bool(dom.isPersistent())))

    def guest_domain_type(self, arch: str = "x86_64") -> str:
        """``kvm`` when libvirt can run KVM guests of ``arch`` here, else ``qemu``.

        libvirt decides as the user QEMU runs as, so this is right where a
        check of /dev/kvm by the calling (root) process is not.
        """
        caps = etree.fromstring(self.call(lambda conn: conn.getCapabilities()).encode())
        kvm = caps.xpath("./guest[arch/@name=$arch]/arch/domain[@type='kvm']", arch=arch)
        return "kvm" if kvm else "qemu"

    def domain_xml(self, name: str, inactive: bool = False) -> str:
        flags = self.libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return self.domain_call(name, lambda dom: dom.XMLDesc(flags))

    def _device_flags(self, live: bool, persistent: bool) -> int:
        flags = 0
        if live:
            flags |= self.libvirt.VIR_DOMAIN_AFFECT_LIVE
        if persistent:
            flags |= self.libvirt.VIR_DOMAIN_AFFECT_CONFIG
        return flags

    def attach_device(self, name: str, device, live: bool = True,
                      persistent: bool = False) -> None:
        """Attach ``device``, a config object (``LibvirtConfigGuestDisk``,
        ``LibvirtConfigDeviceXML``: anything with ``to_xml()``)."""
        flags = self._device_flags(live, persistent)
        xml = device.to_xml()
        self.domain_call(name, lambda dom: dom.attachDeviceFlags(xml, flags))

    def detach_device(self, name: str, device, dev: str, live: bool = True,
                      persistent: bool = False, timeout: float | None = None) -> None:
        """Detach ``device`` (a config object, usually the
        ``LibvirtConfigDeviceXML`` of the disk libvirt shows) and, when
        ``live``, wait until ``dev`` left the live XML."""
        flags = self._device_flags(live, persistent)
        xml = device.to_xml()
        self.domain_call(name, lambda dom: dom.detachDeviceFlags(xml, flags))
        if live:
            self.wait_device_gone(name, dev, timeout)

    def wait_device_gone(self, name: str, dev: str, timeout: float | None = None) -> None:
        """Poll the live XML (quickly at first, then backing off) until ``dev`` is gone."""
        if timeout is None:
            timeout = CONF.libvirt.device_detach_timeout
        deadline = time.monotonic() + timeout
        delay = _DETACH_FIRST_POLL
        # Read through the scanner, so the secret-user scan that follows a
        # detach need not fetch this domain's XML again.
        while dev in target_devs(self.domain_call(
                name, lambda dom: self._scanner.live_xml(name, dom))):
            if time.monotonic() >= deadline:
                raise exception.DeviceDetachTimeout(dev=dev, domain=name, timeout=timeout)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, _DETACH_MAX_POLL)

    def block_resize(self, name: str, dev: str, size_bytes: int) -> None:
        flags = self.libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES
        self.domain_call(name, lambda dom: dom.blockResize(dev, size_bytes, flags))

    def block_capacity(self, name: str, dev: str) -> int:
        """The size of disk ``dev`` as QEMU sees it, in bytes."""
        return self.domain_call(name, lambda dom: dom.blockInfo(dev)[0])

    def domain_documents(self) -> list[DomainDocument]:
        """Every XML document libvirt may start a domain from, host-wide,
        read by a scan that began after this call (see ``domain_scan``)."""
        return self._scanner.documents()

    def domain_xmls(self) -> dict[str, list[str]]:
        """Every domain's live and persistent XML, by name."""
        found: dict[str, list[str]] = {}
        for doc in self.domain_documents():
            if doc.where in ("live", "config"):
                found.setdefault(doc.domain, []).append(doc.xml)
        return found

    # -- secrets ----------------------------------------------------------
    def _usage_code(self, usage_type: str) -> int:
        try:
            return getattr(self.libvirt, _USAGE_TYPES[usage_type])
        except KeyError:
            raise exception.InvalidInput(
                reason=f"secret usage type {usage_type!r} is not one of "
                f"{sorted(_USAGE_TYPES)}") from None

    def find_secret(self, usage_type: str, usage_id: str):
        """The virSecret with this usage, or None. Only 'no such secret' means None."""
        code = self._usage_code(usage_type)
        try:
            return self.call(lambda conn: conn.secretLookupByUsage(code, usage_id))
        except self.libvirt.libvirtError as exc:
            if self.is_code(exc, "VIR_ERR_NO_SECRET"):
                return None
            raise

    def secret_by_uuid(self, uuid: str):
        """The virSecret ``uuid``, or None. Only 'no such secret' means None."""
        try:
            return self.call(lambda conn: conn.secretLookupByUUIDString(uuid))
        except self.libvirt.libvirtError as exc:
            if self.is_code(exc, "VIR_ERR_NO_SECRET"):
                return None
            raise

    def secret_exists(self, uuid: str) -> bool:
        return self.secret_by_uuid(uuid) is not None

    def list_secrets(self) -> list:
        """Every secret libvirt knows on this host."""
        return self.call(lambda conn: conn.listAllSecrets(0))

    def define_secret_xml(self, xml: str):
        """Define a secret from ``xml``; the new virSecret."""
        return self.call(lambda conn: conn.secretDefineXML(xml))

    def delete_secret(self, uuid: str) -> bool:
        """Undefine secret ``uuid``; False when it did not exist."""
        try:
            secret = self.call(lambda conn: conn.secretLookupByUUIDString(uuid))
        except self.libvirt.libvirtError as exc:
            if self.is_code(exc, "VIR_ERR_NO_SECRET"):
                return False
            raise
        return self.undefine_secret(secret)

    def undefine_secret(self, secret) -> bool:
        """Undefine virSecret ``secret``; False when it was gone already."""
        try:
            secret.undefine()
        except self.libvirt.libvirtError as exc:
            if self.is_code(exc, "VIR_ERR_NO_SECRET"):
                return False
            raise
        return True
