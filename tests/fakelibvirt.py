"""A fake ``libvirt`` module for fast unit tests.

It stands in for the part of libvirt-python 12.x (bound to libvirt 9.0) that
hvplug uses: same names, signatures, return types and error codes.
``tests/contract`` runs the same scenarios against it and a real libvirtd.
State lives in fake hosts keyed by URI, so two ``open()`` calls share guests
and secrets::

    monkeypatch.setitem(sys.modules, "libvirt", fakelibvirt)
    fakelibvirt.reset()
    conn = fakelibvirt.open("qemu:///system")

Test helpers, not part of libvirt: ``reset``, ``simulate_connection_drop``,
``simulate_daemon_down``, ``simulate_daemon_up``, ``set_iscsi_login``,
``set_lun_size``, ``hold_detach`` and ``release_detach``.

Managed save (``virsh managedsave``) keeps the live XML as the image, the
next ``create()`` resumes from it.  Snapshots are disk-only and external
only: the overlay goes on top and the old source becomes the disk's
``<backingStore>``, as ``virsh snapshot-create-as --disk-only`` does.
"""

import builtins
import copy
import dataclasses
import os
import stat
import time
import uuid as uuidlib
import weakref
from collections.abc import Callable
from typing import Any

from lxml import etree

# Values copied from the real module (libvirt-python 12.8, libvirt 9.0).
VIR_ERR_NONE, VIR_ERR_WARNING, VIR_ERR_ERROR = 0, 1, 2
VIR_ERR_OK = 0
VIR_ERR_INTERNAL_ERROR = 1
VIR_ERR_NO_SUPPORT = 3
VIR_ERR_NO_CONNECT = 5
VIR_ERR_INVALID_CONN = 6
VIR_ERR_INVALID_DOMAIN = 7
VIR_ERR_INVALID_ARG = 8
VIR_ERR_OPERATION_FAILED = 9
VIR_ERR_NO_TARGET = 20
VIR_ERR_NO_NAME = 21
VIR_ERR_XML_ERROR = 27
VIR_ERR_DOM_EXIST = 28
VIR_ERR_XML_DETAIL = 35
VIR_ERR_SYSTEM_ERROR = 38
VIR_ERR_RPC = 39
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_AUTH_FAILED = 45
VIR_ERR_OPERATION_INVALID = 55
VIR_ERR_INVALID_SECRET = 65
VIR_ERR_NO_SECRET = 66
VIR_ERR_CONFIG_UNSUPPORTED = 67
VIR_ERR_OPERATION_TIMEOUT = 68
VIR_ERR_NO_DOMAIN_SNAPSHOT = 72
VIR_ERR_OPERATION_UNSUPPORTED = 84
VIR_ERR_DEVICE_MISSING = 99

VIR_FROM_NONE, VIR_FROM_XML, VIR_FROM_RPC, VIR_FROM_CONF, VIR_FROM_QEMU = 0, 5, 7, 9, 10
VIR_FROM_TEST, VIR_FROM_REMOTE, VIR_FROM_STORAGE = 12, 13, 18
VIR_FROM_DOMAIN, VIR_FROM_SECRET, VIR_FROM_DOMAIN_SNAPSHOT = 20, 30, 35

VIR_DOMAIN_AFFECT_CURRENT, VIR_DOMAIN_AFFECT_LIVE, VIR_DOMAIN_AFFECT_CONFIG = 0, 1, 2
VIR_DOMAIN_XML_SECURE, VIR_DOMAIN_XML_INACTIVE = 1, 2
VIR_DOMAIN_BLOCK_RESIZE_BYTES = 1
VIR_DOMAIN_NONE = 0

VIR_SECRET_USAGE_TYPE_NONE, VIR_SECRET_USAGE_TYPE_VOLUME, VIR_SECRET_USAGE_TYPE_CEPH = 0, 1, 2
VIR_SECRET_USAGE_TYPE_ISCSI, VIR_SECRET_USAGE_TYPE_TLS, VIR_SECRET_USAGE_TYPE_VTPM = 3, 4, 5

VIR_CONNECT_LIST_DOMAINS_ACTIVE, VIR_CONNECT_LIST_DOMAINS_INACTIVE = 1, 2
VIR_CONNECT_LIST_DOMAINS_PERSISTENT, VIR_CONNECT_LIST_DOMAINS_TRANSIENT = 4, 8
VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE, VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE = 256, 512
VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT, VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT = 4096, 8192
VIR_CONNECT_LIST_SECRETS_EPHEMERAL, VIR_CONNECT_LIST_SECRETS_NO_EPHEMERAL = 1, 2
VIR_CONNECT_LIST_SECRETS_PRIVATE, VIR_CONNECT_LIST_SECRETS_NO_PRIVATE = 4, 8

VIR_DOMAIN_NOSTATE, VIR_DOMAIN_RUNNING, VIR_DOMAIN_BLOCKED = 0, 1, 2
VIR_DOMAIN_PAUSED, VIR_DOMAIN_SHUTDOWN, VIR_DOMAIN_SHUTOFF = 3, 4, 5
VIR_DOMAIN_CRASHED = 6
VIR_DOMAIN_RUNNING_UNKNOWN, VIR_DOMAIN_RUNNING_BOOTED, VIR_DOMAIN_RUNNING_RESTORED = 0, 1, 3
VIR_DOMAIN_SHUTOFF_UNKNOWN, VIR_DOMAIN_SHUTOFF_DESTROYED, VIR_DOMAIN_SHUTOFF_SAVED = 0, 2, 5
VIR_DOMAIN_UNDEFINE_MANAGED_SAVE, VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA = 1, 2
VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA, VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY = 4, 16
VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY = 2

LIB_VERSION = 9000000  # libvirt 9.0.0
DEFAULT_URI = "qemu:///system"
LUN_SIZE = 1 << 30  # what a LUN with no set_lun_size() reports
ISCSI_AUTH_FAILURE = ("iSCSI: Failed to connect to LUN : Failed to log in to target. "
                      "Status: Authentication failure(513)")

IscsiLogin = Callable[[str, int, str, int, str | None, str | None, str], int | None]

_USAGE_TYPES = {"none": 0, "volume": 1, "ceph": 2, "iscsi": 3, "tls": 4, "vtpm": 5}
_USAGE_NAMES = {v: k for k, v in _USAGE_TYPES.items()}
_USAGE_CHILD = {"volume": "volume", "ceph": "name", "iscsi": "target", "tls": "name",
                "vtpm": "name"}
_PARSER = etree.XMLParser(remove_blank_text=True)
_SCSI_UNITS = 7  # libvirt's units per (narrow) SCSI controller


class libvirtError(Exception):
    """The one libvirt exception; ``err`` has the shape of virGetLastError()."""

    def __init__(self, defmsg: str, error_code: int | None = None,
                 error_domain: int = VIR_FROM_NONE, error_level: int = VIR_ERR_ERROR) -> None:
        super().__init__(defmsg)
        self.err: tuple | None = None
        if error_code is not None:
            self.err = (error_code, error_domain, defmsg, error_level, None, None, None, -1, 0)

    def _field(self, index: int) -> Any:
        return None if self.err is None else self.err[index]

    def get_error_code(self) -> int | None:
        return self._field(0)

    def get_error_domain(self) -> int | None:
        return self._field(1)

    def get_error_message(self) -> str | None:
        return self._field(2)

    def get_error_level(self) -> int | None:
        return self._field(3)


_error_handler: tuple[Callable, Any] | None = None


def registerErrorHandler(f: Callable, ctx: Any) -> int:
    """Like libvirt: ``f(ctx, err)`` is called for every error raised."""
    global _error_handler
    _error_handler = None if f is None else (f, ctx)
    return 1


def _error(code: int, domain: int, message: str) -> libvirtError:
    exc = libvirtError(message, code, domain)
    if _error_handler is not None:
        _error_handler[0](_error_handler[1], exc.err)
    return exc


def _qemu_error(command: str, detail: str) -> libvirtError:
    return _error(VIR_ERR_INTERNAL_ERROR, VIR_FROM_QEMU,
                  f"internal error: unable to execute QEMU command '{command}': {detail}")


# ---------------------------------------------------------------- host state

@dataclasses.dataclass
class _Secret:
    uuid: str
    usage_type: int
    usage_id: str
    ephemeral: bool
    private: bool
    description: str | None
    value: bytes | None = None


@dataclasses.dataclass
class _Domain:
    uuid: str
    name: str
    config: etree._Element | None  # None: transient
    live: etree._Element | None = None  # None: shut off
    reason: int = VIR_DOMAIN_SHUTOFF_UNKNOWN
    source_index: int = 0
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # network disks
    pending: set[str] = dataclasses.field(default_factory=set)  # held detaches
    saved: etree._Element | None = None  # the managed save image's XML
    snapshots: dict[str, etree._Element] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Host:
    uri: str
    domains: dict[str, _Domain] = dataclasses.field(default_factory=dict)
    secrets: dict[str, _Secret] = dataclasses.field(default_factory=dict)
    conns: list["virConnect"] = dataclasses.field(default_factory=list)
    down: bool = False
    next_id: int = 1

    def by_name(self, name: str) -> _Domain | None:
        return next((d for d in self.domains.values() if d.name == name), None)


_hosts: dict[str, _Host] = {}
_iscsi_login: IscsiLogin | None = None
kvm_available = True  # what getCapabilities() offers
_lun_sizes: dict[tuple[str, int], int] = {}
_holds: dict[str, set[str] | None] = {}


def reset() -> None:
    """Forget every host, hook and error handler."""
    global _iscsi_login, _error_handler
    _hosts.clear()
    _lun_sizes.clear()
    _holds.clear()
    _iscsi_login = None
    _error_handler = None


def simulate_connection_drop(uri: str = DEFAULT_URI) -> None:
    """Existing connections lose the daemon; a new ``open()`` works."""
    for conn in _hosts.get(uri, _Host(uri)).conns:
        conn._link = "dropped"


def simulate_daemon_down(uri: str = DEFAULT_URI) -> None:
    """libvirtd stops: connections drop, ``open()`` fails, ephemeral secrets go."""
    simulate_connection_drop(uri)
    host = _hosts.setdefault(uri, _Host(uri))
    host.down = True
    host.secrets = {k: s for k, s in host.secrets.items() if not s.ephemeral}


def simulate_daemon_up(uri: str = DEFAULT_URI) -> None:
    _hosts.setdefault(uri, _Host(uri)).down = False


def set_iscsi_login(func: IscsiLogin | None) -> None:
    """QEMU's iSCSI login on a live attach: ``func(host, port, iqn, lun,
    username, password, initiator_iqn)``; it may return the LUN size in bytes.

    Any exception other than libvirtError comes out the way QEMU reports it,
    e.g. ``raise RuntimeError(ISCSI_AUTH_FAILURE)`` for a wrong CHAP password.
    """
    global _iscsi_login
    _iscsi_login = func


def set_lun_size(iqn: str, lun: int, size: int) -> None:
    """The target's size of a LUN, as QEMU would read it (e.g. after an extend)."""
    _lun_sizes[(iqn, lun)] = size


def hold_detach(domain: str, dev: str | None = None) -> None:
    """Live detaches from ``domain`` (only of ``dev`` if given) return 0 but the
    disk stays, as with virtio-blk in a guest without an OS."""
    held = _holds.get(domain, set())
    _holds[domain] = None if dev is None or held is None else held | {dev}


def release_detach(domain: str) -> None:
    """Stop holding, and let the held detaches of ``domain`` finish."""
    _holds.pop(domain, None)
    for host in _hosts.values():
        dom = host.by_name(domain)
        if dom is not None and dom.live is not None:
            for dev in dom.pending:
                _remove_disk(dom.live, dev)
                dom.sizes.pop(dev, None)
            dom.pending.clear()


def open(name: str | None = None) -> "virConnect":
    uri = name or DEFAULT_URI
    if uri.split(":", 1)[0].split("+", 1)[0] not in ("qemu", "test"):
        raise _error(VIR_ERR_NO_CONNECT, VIR_FROM_NONE,
                     f"no connection driver available for {uri}")
    host = _hosts.setdefault(uri, _Host(uri))
    if host.down:
        raise _error(VIR_ERR_SYSTEM_ERROR, VIR_FROM_RPC, "Failed to connect socket to "
                     "'/var/run/libvirt/libvirt-sock': Connection refused")
    conn = virConnect(host)
    host.conns.append(conn)
    return conn


# ---------------------------------------------------------------- XML helpers

def _parse(xml: str, what: str, domain: int) -> etree._Element:
    try:
        return etree.fromstring(xml.encode(), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise _error(VIR_ERR_XML_DETAIL, domain, f"({what}):1: {exc.msg}") from None


def _format(root: etree._Element) -> str:
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def _uuid(text: str | None) -> str | None:
    try:
        return str(uuidlib.UUID(text or ""))
    except ValueError:
        return None


def _target_dev(disk: etree._Element) -> str | None:
    target = disk.find("target")
    return None if target is None else target.get("dev")


def _local_path(disk: etree._Element) -> str | None:
    attr = {"file": "file", "block": "dev"}.get(disk.get("type", "file"))
    return disk.find("source").get(attr) if attr and disk.find("source") is not None else None


def _describe(disk: etree._Element) -> str:
    source = disk.find("source")
    if source is None:
        return ""
    return source.get("file") or source.get("dev") or source.get("name") or ""


def _disks(root: etree._Element | None) -> list[etree._Element]:
    return [] if root is None else root.findall("devices/disk")


def _by_target(root: etree._Element | None, dev: str | None) -> etree._Element | None:
    return next((d for d in _disks(root) if _target_dev(d) == dev), None)


def _find_disk(root: etree._Element | None, name: str) -> etree._Element | None:
    """By target dev, else by local source path, like virDomainDiskByName."""
    found = _by_target(root, name)
    return found if found is not None else next(
        (d for d in _disks(root) if _local_path(d) == name), None)


def _remove_disk(root: etree._Element, dev: str) -> None:
    disk = _by_target(root, dev)
    if disk is not None:
        disk.getparent().remove(disk)


def _dev_index(dev: str) -> int:
    """'sda' -> 0, 'vdb' -> 1, 'sdaa' -> 26, like virDiskNameToIndex."""
    letters = dev.lstrip("shvx").removeprefix("d")
    index = 0
    for char in letters:
        index = index * 26 + ord(char) - ord("a") + 1
    return index - 1


def _devices(root: etree._Element) -> etree._Element:
    devices = root.find("devices")
    return devices if devices is not None else etree.SubElement(root, "devices")


def _assign_address(root: etree._Element, disk: etree._Element) -> None:
    if disk.find("address") is not None:
        return
    bus, index = disk.find("target").get("bus"), _dev_index(_target_dev(disk))
    if bus == "virtio":
        used = {int(a.get("slot"), 16) for a in root.iterfind(".//address[@type='pci']")}
        slot = next(s for s in range(3, 32) if s not in used)
        etree.SubElement(disk, "address", type="pci", domain="0x0000", bus="0x00",
                         slot=f"0x{slot:02x}", function="0x0")
        return
    controller, unit = divmod(index, _SCSI_UNITS) if bus == "scsi" else (0, index)
    etree.SubElement(disk, "address", type="drive", controller=str(controller),
                     bus="0", target="0", unit=str(unit))
    if bus == "scsi" and root.find(
            f"devices/controller[@type='scsi'][@index='{controller}']") is None:
        etree.SubElement(_devices(root), "controller", type="scsi", index=str(controller),
                         model="virtio-scsi")


def _alias(disk: etree._Element) -> str:
    bus, index = disk.find("target").get("bus"), _dev_index(_target_dev(disk))
    if bus == "scsi":
        controller, unit = divmod(index, _SCSI_UNITS)
        return f"scsi{controller}-0-0-{unit}"
    return f"virtio-disk{index}" if bus == "virtio" else f"{bus}0-0-{index}"


def _plug_live(dom: _Domain, disk: etree._Element) -> None:
    """Add what libvirt adds to a running disk: source index, alias, address."""
    if _target_dev(disk) is None:
        return
    dom.source_index += 1
    source = disk.find("source")
    if source is not None:
        source.set("index", str(dom.source_index))
        if disk.get("type", "file") in ("file", "block") and disk.find("backingStore") is None:
            source.addnext(etree.Element("backingStore"))
    _assign_address(dom.live, disk)
    disk.find("address").addprevious(etree.Element("alias", name=_alias(disk)))


def _inactive_view(root: etree._Element, keep_empty_stores: bool = False) -> etree._Element:
    """Live XML without runtime state: id, aliases, source indexes, and (unless
    ``keep_empty_stores``, as in a saved image) the empty ``<backingStore/>``s."""
    view = copy.deepcopy(root)
    view.attrib.pop("id", None)
    empty = "" if keep_empty_stores else " | .//backingStore[not(*)]"
    for el in view.xpath(".//alias" + empty):
        el.getparent().remove(el)
    for el in view.xpath(".//source[@index] | .//backingStore[@index]"):
        del el.attrib["index"]
    return view


def _auth_secret(disk: etree._Element) -> tuple[str | None, etree._Element | None]:
    """(username, <secret>) from <source><auth> or the legacy <disk><auth>."""
    auth = disk.find("source/auth")
    auth = auth if auth is not None else disk.find("auth")
    return (None, None) if auth is None else (auth.get("username"), auth.find("secret"))


def _local_size(path: str) -> tuple[int, int]:
    """(capacity, allocation) of a file or block device."""
    info = os.stat(path)
    if not stat.S_ISBLK(info.st_mode):
        return info.st_size, info.st_blocks * 512
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    return size, size


# ---------------------------------------------------------------- connection

class virConnect:
    def __init__(self, host: _Host) -> None:
        self._host = host
        self._closed = False
        self._link = "open"  # open | dropped | reset
        self._children: weakref.WeakSet = weakref.WeakSet()  # each holds a reference

    def _check(self, func: str, domain: int = VIR_FROM_DOMAIN, link: bool = True) -> _Host:
        if self._closed:
            raise _error(VIR_ERR_INVALID_CONN, domain, f"invalid connection pointer in {func}")
        if link:
            self._check_link()
        return self._host

    def _check_link(self) -> None:
        """The first call after the daemon went away sees EOF, later ones a closed socket."""
        if self._link == "dropped":
            self._link = "reset"
            raise _error(VIR_ERR_SYSTEM_ERROR, VIR_FROM_RPC,
                         "End of file while reading data: Input/output error")
        if self._link == "reset":
            raise _error(VIR_ERR_INTERNAL_ERROR, VIR_FROM_RPC,
                         "internal error: client socket is closed")

    def _crash(self) -> None:
        """libvirtd 9.0 segfaults on some requests; the client sees EOF."""
        simulate_connection_drop(self._host.uri)
        self._check_link()

    def isAlive(self) -> int:
        self._check("virConnectIsAlive", link=False)
        return int(self._link == "open")

    def close(self) -> int:
        self._check("virConnectClose", VIR_FROM_NONE, link=False)
        self._closed = True
        return len(self._children)  # references left, like virConnectClose

    def getURI(self) -> str:
        return self._check("virConnectGetURI").uri

    def getLibVersion(self) -> int:
        self._check("virConnectGetLibVersion")
        return LIB_VERSION

    def getCapabilities(self) -> str:
        """An x86_64 host offering TCG, and KVM unless ``kvm_available`` is False."""
        self._check("virConnectGetCapabilities")
        kvm = "<domain type='kvm'/>" if kvm_available else ""
        return ("<capabilities><host><cpu><arch>x86_64</arch></cpu></host>"
                "<guest><os_type>hvm</os_type><arch name='x86_64'><wordsize>64</wordsize>"
                f"<domain type='qemu'/>{kvm}</arch></guest></capabilities>")

    # domains
    def defineXML(self, xml: str) -> "virDomain":
        host = self._check("virDomainDefineXML")
        new = self._admit(_parse(xml, "domain_definition", VIR_FROM_DOMAIN))
        dom = host.domains.setdefault(new.uuid, new)
        dom.config = new.config
        return virDomain(self, dom)

    def createXML(self, xmlDesc: str, flags: int = 0) -> "virDomain":
        host = self._check("virDomainCreateXML")
        new = self._admit(_parse(xmlDesc, "domain_definition", VIR_FROM_DOMAIN))
        dom = host.domains.get(new.uuid)
        if dom is None:
            dom = host.domains[new.uuid] = dataclasses.replace(new, config=None)
        elif dom.live is not None:
            raise _error(VIR_ERR_OPERATION_INVALID, VIR_FROM_DOMAIN, "Requested operation "
                         f"is not valid: domain '{dom.name}' is already active")
        _start(host, dom, new.config)
        return virDomain(self, dom)

    def _admit(self, root: etree._Element) -> _Domain:
        """A _Domain for ``root`` unless its name or uuid clashes with another."""
        name = root.findtext("name")
        if root.tag != "domain" or not name:
            raise _error(VIR_ERR_NO_NAME, VIR_FROM_DOMAIN, "missing name information")
        if root.find("uuid") is None:
            root.find("name").addnext(etree.Element("uuid"))
            root.find("uuid").text = str(uuidlib.uuid4())
        uuid = _uuid(root.findtext("uuid"))
        for other in self._host.domains.values():
            if (other.name == name) != (other.uuid == uuid):
                raise _error(VIR_ERR_OPERATION_FAILED, VIR_FROM_DOMAIN, "operation failed: "
                             f"domain '{other.name}' already exists with uuid {other.uuid}")
        return _Domain(uuid, name, root)

    def lookupByName(self, name: str) -> "virDomain":
        dom = self._check("virDomainLookupByName").by_name(name)
        if dom is None:
            raise _error(VIR_ERR_NO_DOMAIN, VIR_FROM_QEMU,
                         f"Domain not found: no domain with matching name '{name}'")
        return virDomain(self, dom)

    def lookupByUUIDString(self, uuidstr: str) -> "virDomain":
        host, uuid = self._check("virDomainLookupByUUIDString"), _uuid(uuidstr)
        if uuid is None:
            raise _error(VIR_ERR_INVALID_ARG, VIR_FROM_DOMAIN, "Invalid UUID")
        if uuid not in host.domains:
            raise _error(VIR_ERR_NO_DOMAIN, VIR_FROM_QEMU,
                         f"Domain not found: no domain with matching uuid '{uuid}'")
        return virDomain(self, host.domains[uuid])

    def listAllDomains(self, flags: int = 0) -> list["virDomain"]:
        host = self._check("virConnectListAllDomains")
        if flags & ~_DOMAIN_FILTERS:
            raise _error(VIR_ERR_NO_SUPPORT, VIR_FROM_DOMAIN, "this function is not supported "
                         f"by the connection driver: fakelibvirt filter flags {flags:#x}")
        return [virDomain(self, d) for d in host.domains.values()
                if _pick(flags, d.live is not None) and _pick(flags >> 2, d.config is not None)
                and _pick(flags >> 8, d.saved is not None)
                and _pick(flags >> 12, bool(d.snapshots))]

    # secrets
    def secretDefineXML(self, xml: str, flags: int = 0) -> "virSecret":
        host = self._check("virSecretDefineXML", VIR_FROM_SECRET)
        new = _parse_secret(_parse(xml, "definition_of_secret", VIR_FROM_SECRET))
        old = host.secrets.get(new.uuid)
        if old is None:
            _check_usage_free(host, new)
        elif (old.usage_type, old.usage_id) != (new.usage_type, new.usage_id):
            raise _error(VIR_ERR_INTERNAL_ERROR, VIR_FROM_SECRET, "internal error: a secret "
                         f"with UUID {old.uuid} is already defined for use with {old.usage_id}")
        elif old.private and not new.private:
            raise _error(VIR_ERR_INTERNAL_ERROR, VIR_FROM_SECRET,
                         "internal error: cannot change private flag on existing secret")
        new.value = old.value if old else None
        host.secrets[new.uuid] = new
        return virSecret(self, new)

    def secretLookupByUsage(self, usageType: int, usageID: str) -> "virSecret":
        host = self._check("virSecretLookupByUsage", VIR_FROM_SECRET)
        return virSecret(self, _secret_by_usage(host, usageType, usageID))

    def secretLookupByUUIDString(self, uuidstr: str) -> "virSecret":
        host, uuid = self._check("virSecretLookupByUUIDString", VIR_FROM_SECRET), _uuid(uuidstr)
        if uuid is None:
            raise _error(VIR_ERR_INVALID_ARG, VIR_FROM_SECRET,
                         "uuidstr in virSecretLookupByUUIDString must be a valid UUID")
        return virSecret(self, _secret(host, uuid))

    def listAllSecrets(self, flags: int = 0) -> list["virSecret"]:
        host = self._check("virConnectListAllSecrets", VIR_FROM_SECRET)
        return [virSecret(self, s) for s in host.secrets.values()
                if _pick(flags, s.ephemeral) and _pick(flags >> 2, s.private)]

    def listSecrets(self) -> list[str]:
        return list(self._check("virConnectListSecrets", VIR_FROM_SECRET).secrets)


# The listAllDomains filters the fake knows: (IN)ACTIVE, PERSISTENT/TRANSIENT,
# (NO_)MANAGEDSAVE, HAS/NO_SNAPSHOT; a pair's two bits together keep all.
_DOMAIN_FILTERS = 0x3 | 0xC | 0x300 | 0x3000


def _pick(bits: int, has: bool) -> bool:
    """Filter on a pair of flag bits (e.g. ACTIVE|INACTIVE); none or both keep all."""
    bits &= 3
    return bits in (0, 3) or (bits == 1) == has


# ---------------------------------------------------------------- secrets

def _parse_secret(root: etree._Element) -> _Secret:
    uuid = _uuid(root.findtext("uuid") or str(uuidlib.uuid4()))
    usage = root.find("usage")
    kind = "none" if usage is None else usage.get("type", "")
    if uuid is None or kind not in _USAGE_TYPES:
        raise _error(VIR_ERR_INTERNAL_ERROR, VIR_FROM_SECRET,
                     "internal error: malformed uuid element or unknown usage type")
    usage_id = "" if usage is None else usage.findtext(_USAGE_CHILD[kind]) or ""
    return _Secret(uuid, _USAGE_TYPES[kind], usage_id, root.get("ephemeral") == "yes",
                   root.get("private") == "yes", root.findtext("description"))


def _check_usage_free(host: _Host, new: _Secret) -> None:
    """Usage (type + id) is unique per host, as in virSecretObjListAdd."""
    if new.usage_type == VIR_SECRET_USAGE_TYPE_NONE:
        return
    for old in host.secrets.values():
        if (old.usage_type, old.usage_id) == (new.usage_type, new.usage_id):
            raise _error(VIR_ERR_INTERNAL_ERROR, VIR_FROM_SECRET, "internal error: a secret "
                         f"with UUID {old.uuid} already defined for use with {old.usage_id}")


def _secret(host: _Host, uuid: str) -> _Secret:
    if uuid not in host.secrets:
        raise _error(VIR_ERR_NO_SECRET, VIR_FROM_SECRET,
                     f"Secret not found: no secret with matching uuid '{uuid}'")
    return host.secrets[uuid]


def _secret_by_usage(host: _Host, usage_type: int, usage_id: str) -> _Secret:
    for secret in host.secrets.values():
        if (secret.usage_type, secret.usage_id) == (usage_type, usage_id):
            return secret
    raise _error(VIR_ERR_NO_SECRET, VIR_FROM_SECRET,
                 f"Secret not found: no secret with matching usage '{usage_id}'")


def _secret_xml(secret: _Secret) -> str:
    root = etree.Element("secret", ephemeral="yes" if secret.ephemeral else "no",
                         private="yes" if secret.private else "no")
    etree.SubElement(root, "uuid").text = secret.uuid
    if secret.description is not None:
        etree.SubElement(root, "description").text = secret.description
    if secret.usage_type != VIR_SECRET_USAGE_TYPE_NONE:
        kind = _USAGE_NAMES[secret.usage_type]
        usage = etree.SubElement(root, "usage", type=kind)
        etree.SubElement(usage, _USAGE_CHILD[kind]).text = secret.usage_id
    return _format(root)


class virSecret:
    def __init__(self, conn: virConnect, state: _Secret) -> None:
        self._conn, self._uuid = conn, state.uuid
        self._usage = (state.usage_type, state.usage_id)
        conn._children.add(self)

    def _state(self) -> _Secret:
        self._conn._check_link()
        return _secret(self._conn._host, self._uuid)

    def UUIDString(self) -> str:
        return self._uuid

    def usageType(self) -> int:
        return self._usage[0]

    def usageID(self) -> str:
        return self._usage[1]

    def XMLDesc(self, flags: int = 0) -> str:
        return _secret_xml(self._state())

    def setValue(self, value: bytes | str, flags: int = 0) -> int:
        state = self._state()
        if not value:
            raise _error(VIR_ERR_INVALID_ARG, VIR_FROM_SECRET,
                         "value in virSecretSetValue must not be NULL")
        state.value = value.encode() if isinstance(value, str) else bytes(value)
        return 0

    def value(self, flags: int = 0) -> bytes:
        state = self._state()
        if state.private:
            raise _error(VIR_ERR_INVALID_SECRET, VIR_FROM_SECRET,
                         "Invalid secret: secret is private")
        if state.value is None:
            raise _error(VIR_ERR_NO_SECRET, VIR_FROM_SECRET,
                         f"Secret not found: secret '{self._uuid}' does not have a value")
        return state.value

    def undefine(self) -> int:
        self._state()
        del self._conn._host.secrets[self._uuid]
        return 0


# ---------------------------------------------------------------- disk sources

def _credentials(host: _Host, disk: etree._Element) -> tuple[str | None, str | None]:
    """(username, password) of the disk's <auth>, checked the way libvirt does."""
    username, ref = _auth_secret(disk)
    if ref is None:
        return username, None
    kind = ref.get("type", "iscsi")
    if ref.get("uuid"):
        secret = _secret(host, _uuid(ref.get("uuid")) or ref.get("uuid"))
    else:
        secret = _secret_by_usage(host, _USAGE_TYPES.get(kind, -1), ref.get("usage", ""))
    if _USAGE_NAMES[secret.usage_type] != kind:
        raise _error(VIR_ERR_INVALID_ARG, VIR_FROM_NONE, f"invalid argument: secret with "
                     f"uuid {secret.uuid} is of type '{_USAGE_NAMES[secret.usage_type]}' "
                     f"not expected '{kind}' type")
    if secret.value is None:
        raise _error(VIR_ERR_NO_SECRET, VIR_FROM_SECRET,
                     f"Secret not found: secret '{secret.uuid}' does not have a value")
    return username, secret.value.decode()


def _iqn_lun(source: etree._Element) -> tuple[str, int]:
    iqn, slash, lun = source.get("name", "").rpartition("/")
    return (iqn, int(lun)) if slash and lun.isdigit() else (source.get("name", ""), 0)


def _iscsi_connect(dom: _Domain, disk: etree._Element, creds: tuple) -> int:
    """QEMU's blockdev-add of a libiscsi disk; returns the LUN size."""
    source = disk.find("source")
    portal, (iqn, lun) = source.find("host"), _iqn_lun(source)
    initiator = source.find("initiator/iqn")
    initiator_iqn = (initiator.get("name") if initiator is not None
                     else f"iqn.2008-11.org.linux-kvm:{dom.name}")
    size = None
    if _iscsi_login is not None:
        try:
            size = _iscsi_login(portal.get("name"), int(portal.get("port", 3260)), iqn, lun,
                                *creds, initiator_iqn)
        except libvirtError:
            raise
        except Exception as exc:
            raise _qemu_error("blockdev-add", str(exc)) from exc
    return size if size is not None else _lun_sizes.get((iqn, lun), LUN_SIZE)


def _shared(disk: etree._Element) -> bool:
    return disk.find("readonly") is not None or disk.find("shareable") is not None


def _check_write_lock(host: _Host, path: str, disk: etree._Element) -> None:
    """QEMU locks images: a second writer of the same file fails (any guest)."""
    for other in host.domains.values():
        for used in _disks(other.live):
            if used is not disk and _local_path(used) == path and not (
                    _shared(used) or _shared(disk)):
                raise _qemu_error("device_add", 'Failed to get "write" lock')


def _connect(host: _Host, dom: _Domain, disk: etree._Element) -> None:
    """What QEMU does to open a disk's source, with libvirt's checks first."""
    path = _local_path(disk)
    if path is not None:
        if not os.path.exists(path):
            raise _error(VIR_ERR_SYSTEM_ERROR, VIR_FROM_STORAGE,
                         f"Cannot access storage file '{path}': No such file or directory")
        _check_write_lock(host, path, disk)
        return
    creds = _credentials(host, disk)
    source = disk.find("source")
    if disk.get("type") == "network" and source.get("protocol") == "iscsi":
        dom.sizes[_target_dev(disk)] = _iscsi_connect(dom, disk, creds)


def _start(host: _Host, dom: _Domain, root: etree._Element) -> None:
    live = copy.deepcopy(root)
    for disk in _disks(live):
        _connect(host, dom, disk)
    live.set("id", str(host.next_id))
    host.next_id += 1
    dom.live, dom.reason, dom.source_index = live, VIR_DOMAIN_RUNNING_BOOTED, 0
    for disk in _disks(live):
        _plug_live(dom, disk)


# ---------------------------------------------------------------- domains

def _parse_disk(xml: str) -> etree._Element:
    disk = _parse(xml, "device_definition", VIR_FROM_DOMAIN)
    if disk.tag != "disk":
        raise _error(VIR_ERR_CONFIG_UNSUPPORTED, VIR_FROM_DOMAIN,
                     f"unsupported configuration: unknown device type '{disk.tag}'")
    return disk


def _not_valid(domain: int, why: str) -> libvirtError:
    return _error(VIR_ERR_OPERATION_INVALID, domain, f"Requested operation is not valid: {why}")


def _affected(dom: _Domain, flags: int) -> tuple[bool, bool]:
    """(live, config) for AFFECT_* flags; CURRENT means live if running."""
    live, config = bool(flags & VIR_DOMAIN_AFFECT_LIVE), bool(flags & VIR_DOMAIN_AFFECT_CONFIG)
    if not (live or config):
        live, config = dom.live is not None, dom.live is None
    if live and dom.live is None:
        raise _not_valid(VIR_FROM_DOMAIN, "domain is not running")
    if config and dom.config is None:
        raise _not_valid(VIR_FROM_DOMAIN, "transient domains do not have any persistent config")
    return live, config


class virDomain:
    def __init__(self, conn: virConnect, state: _Domain) -> None:
        self._conn, self._uuid, self._name = conn, state.uuid, state.name
        conn._children.add(self)

    def _state(self) -> _Domain:
        self._conn._check_link()
        dom = self._conn._host.domains.get(self._uuid)
        if dom is None:
            raise _error(VIR_ERR_NO_DOMAIN, VIR_FROM_QEMU, "Domain not found: no domain "
                         f"with matching uuid '{self._uuid}' ({self._name})")
        return dom

    def _running(self) -> _Domain:
        dom = self._state()
        if dom.live is None:
            raise _not_valid(VIR_FROM_DOMAIN, "domain is not running")
        return dom

    def name(self) -> str:
        return self._name

    def UUIDString(self) -> str:
        return self._uuid

    def isActive(self) -> int:
        return int(self._state().live is not None)

    def isPersistent(self) -> int:
        return int(self._state().config is not None)

    def state(self, flags: int = 0) -> list[int]:
        dom = self._state()
        return [VIR_DOMAIN_SHUTOFF if dom.live is None else VIR_DOMAIN_RUNNING, dom.reason]

    def XMLDesc(self, flags: int = 0) -> str:
        dom = self._state()
        if dom.live is None or (flags & VIR_DOMAIN_XML_INACTIVE and dom.config is not None):
            return _format(dom.config)
        return _format(_inactive_view(dom.live) if flags & VIR_DOMAIN_XML_INACTIVE else dom.live)

    def create(self) -> int:
        """Boot from the config, or resume from the managed save image (then gone)."""
        dom = self._state()
        if dom.live is not None:
            raise _not_valid(VIR_FROM_QEMU, "domain is already running")
        if dom.saved is None:
            _start(self._conn._host, dom, dom.config)
            return 0
        _start(self._conn._host, dom, dom.saved)
        dom.saved, dom.reason = None, VIR_DOMAIN_RUNNING_RESTORED
        return 0

    def destroy(self) -> int:
        dom = self._running()
        dom.live, dom.reason = None, VIR_DOMAIN_SHUTOFF_DESTROYED
        dom.sizes.clear()
        dom.pending.clear()
        if dom.config is None:
            del self._conn._host.domains[self._uuid]
        return 0

    def undefine(self) -> int:
        return self.undefineFlags(0)

    def undefineFlags(self, flags: int = 0) -> int:
        dom = self._state()
        if dom.config is None:
            raise _not_valid(VIR_FROM_QEMU, "cannot undefine transient domain")
        if dom.snapshots and dom.live is None and not (
                flags & VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA):
            raise _not_valid(VIR_FROM_QEMU, "cannot delete inactive domain with "
                             f"{len(dom.snapshots)} snapshots")
        if dom.saved is not None and not flags & VIR_DOMAIN_UNDEFINE_MANAGED_SAVE:
            raise _not_valid(VIR_FROM_QEMU, "Refusing to undefine while domain managed "
                             "save image exists")
        if flags & VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA:
            dom.snapshots.clear()
        dom.config, dom.saved = None, None
        if dom.live is None:
            del self._conn._host.domains[self._uuid]
        return 0

    # managed save
    def managedSave(self, flags: int = 0) -> int:
        """Stop the domain; its live XML becomes the image the next start resumes."""
        dom = self._running()
        if dom.config is None:
            raise _not_valid(VIR_FROM_QEMU, "cannot do managed save for transient domain")
        dom.saved = _inactive_view(dom.live, keep_empty_stores=True)
        dom.live, dom.reason = None, VIR_DOMAIN_SHUTOFF_SAVED
        dom.sizes.clear()
        dom.pending.clear()
        return 0

    def _saved(self) -> _Domain:
        dom = self._state()
        if dom.saved is None:
            raise _not_valid(VIR_FROM_QEMU, "domain does not have managed save image")
        return dom

    def hasManagedSaveImage(self, flags: int = 0) -> int:
        return int(self._state().saved is not None)

    def managedSaveGetXMLDesc(self, flags: int = 0) -> str:
        return _format(self._saved().saved)

    def managedSaveRemove(self, flags: int = 0) -> int:
        dom = self._state()
        if dom.saved is None:
            raise _error(VIR_ERR_SYSTEM_ERROR, VIR_FROM_QEMU, "Failed to remove managed save "
                         f"file '/var/lib/libvirt/qemu/save/{dom.name}.save': "
                         "No such file or directory")
        dom.saved = None
        return 0

    def managedSaveDefineXML(self, dxml: str, flags: int = 0) -> int:
        """Replace the image's XML; libvirt refuses any change of the ABI (disks...)."""
        dom = self._saved()
        new = _parse(dxml, "domain_definition", VIR_FROM_DOMAIN)
        if len(_disks(new)) != len(_disks(dom.saved)):
            raise _error(VIR_ERR_CONFIG_UNSUPPORTED, VIR_FROM_DOMAIN,
                         f"unsupported configuration: Target domain disk count "
                         f"{len(_disks(new))} does not match source {len(_disks(dom.saved))}")
        dom.saved = new
        return 0

    # snapshots
    def listAllSnapshots(self, flags: int = 0) -> list["virDomainSnapshot"]:
        return [virDomainSnapshot(self, name) for name in self._state().snapshots]

    def snapshotLookupByName(self, name: str, flags: int = 0) -> "virDomainSnapshot":
        _snapshot(self._state(), name)
        return virDomainSnapshot(self, name)

    def snapshotCreateXML(self, xmlDesc: str, flags: int = 0) -> "virDomainSnapshot":
        """A disk-only external snapshot of a running domain (all the fake takes)."""
        dom = self._state()
        if not flags & VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY or dom.live is None:
            raise _error(VIR_ERR_NO_SUPPORT, VIR_FROM_QEMU, "this function is not "
                         "supported by the connection driver: fakelibvirt takes only "
                         "disk-only snapshots of running domains")
        spec = _parse(xmlDesc, "domainsnapshot", VIR_FROM_DOMAIN_SNAPSHOT)
        name = spec.findtext("name") or str(int(time.time()))
        if name in dom.snapshots:
            raise _error(VIR_ERR_OPERATION_FAILED, VIR_FROM_DOMAIN,
                         f"operation failed: domain moment {name} already exists")
        record = _snapshot_record(name, dom)
        for disk in _disks(dom.live):
            overlay = _overlay_path(spec, disk, name)
            if overlay is not None:
                _add_overlay(dom, disk, _by_target(dom.config, _target_dev(disk)), overlay)
                entry = etree.SubElement(record.find("disks"), "disk", snapshot="external",
                                         name=_target_dev(disk), type="file")
                etree.SubElement(entry, "driver", type="qcow2")
                etree.SubElement(entry, "source", file=overlay)
        if not flags & VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA:
            dom.snapshots[name] = record
        return virDomainSnapshot(self, name)

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int:
        dom, disk = self._state(), _parse_disk(xml)
        dev = _target_dev(disk)
        if dev is None:
            raise _error(VIR_ERR_NO_TARGET, VIR_FROM_DOMAIN,
                         f"missing target information for device {_describe(disk)}")
        live, config = _affected(dom, flags)
        if config and _by_target(dom.config, dev) is not None:
            raise _not_valid(VIR_FROM_QEMU, f"target {dev} already exists")
        if live:
            self._plug(dom, copy.deepcopy(disk))
        if config:
            _devices(dom.config).append(disk)
            _assign_address(dom.config, disk)
        return 0

    def _plug(self, dom: _Domain, disk: etree._Element) -> None:
        clash = _by_target(dom.live, _target_dev(disk))
        if clash is not None:
            raise _error(VIR_ERR_XML_ERROR, VIR_FROM_DOMAIN, f"XML error: target "
                         f"'{_target_dev(disk)}' duplicated for disk sources "
                         f"'{_describe(clash)}' and '{_describe(disk)}'")
        _connect(self._conn._host, dom, disk)
        _devices(dom.live).append(disk)
        _plug_live(dom, disk)

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int:
        dom, disk = self._state(), _parse_disk(xml)
        dev = _target_dev(disk)
        live, config = _affected(dom, flags)
        if dev is None and live:
            self._conn._crash()  # libvirt 9.0 dereferences the missing target
        if config and _by_target(dom.config, dev) is None:
            raise _error(VIR_ERR_DEVICE_MISSING, VIR_FROM_QEMU,
                         f"device not found: no target device {dev or '(null)'}")
        if live and _by_target(dom.live, dev) is None:
            raise _error(VIR_ERR_DEVICE_MISSING, VIR_FROM_QEMU,
                         f"device not found: disk {dev} not found")
        if config:
            _remove_disk(dom.config, dev)
        if live:
            self._unplug(dom, dev)
        return 0

    def _unplug(self, dom: _Domain, dev: str) -> None:
        held = _holds.get(dom.name, set())
        if held is None or dev in held:
            dom.pending.add(dev)  # the guest never acknowledges
            return
        _remove_disk(dom.live, dev)
        dom.sizes.pop(dev, None)

    def blockInfo(self, path: str, flags: int = 0) -> list[int]:
        dom = self._state()
        disk = _find_disk(dom.config if dom.live is None else dom.live, path)
        if disk is None:
            raise _error(VIR_ERR_INVALID_ARG, VIR_FROM_QEMU,
                         f"invalid argument: invalid path {path} not assigned to domain")
        if _local_path(disk) is not None:
            capacity, allocation = _local_size(_local_path(disk))
            return [capacity, allocation, capacity]
        return [dom.sizes.get(_target_dev(disk), LUN_SIZE)] * 3

    def blockResize(self, disk: str, size: int, flags: int = 0) -> int:
        dom = self._running()
        found = _find_disk(dom.live, disk)
        if found is None:
            raise _error(VIR_ERR_INVALID_ARG, VIR_FROM_QEMU, "invalid argument: "
                         f"disk '{disk}' was not found in the domain config")
        size = size if flags & VIR_DOMAIN_BLOCK_RESIZE_BYTES else size * 1024
        path = _local_path(found)
        if path is not None and found.get("type") == "block":
            if size != _local_size(path)[0]:
                raise _qemu_error("block_resize", "Cannot grow device files")
        elif path is not None:
            os.truncate(path, size)
        else:
            self._resize_network(dom, found, size)
        return 0

    def _resize_network(self, dom: _Domain, disk: etree._Element, size: int) -> None:
        """libiscsi re-reads the LUN capacity and only accepts exactly that size."""
        dev, source = _target_dev(disk), disk.find("source")
        current = dom.sizes.get(dev, LUN_SIZE)
        if (source.get("protocol") == "iscsi"
                and size != _lun_sizes.get(_iqn_lun(source), current)):
            raise _qemu_error("block_resize", "Cannot grow iSCSI devices")
        dom.sizes[dev] = size


# ---------------------------------------------------------------- snapshots

def _snapshot(dom: _Domain, name: str) -> etree._Element:
    if name not in dom.snapshots:
        raise _error(VIR_ERR_NO_DOMAIN_SNAPSHOT, VIR_FROM_QEMU, "Domain snapshot not found: "
                     f"no domain snapshot with matching name '{name}'")
    return dom.snapshots[name]


def _snapshot_record(name: str, dom: _Domain) -> etree._Element:
    """The metadata libvirt keeps: the domain as it was, live and inactive."""
    record = etree.Element("domainsnapshot")
    etree.SubElement(record, "name").text = name
    etree.SubElement(record, "state").text = "disk-snapshot"
    etree.SubElement(record, "creationTime").text = str(int(time.time()))
    etree.SubElement(record, "memory", snapshot="no")
    etree.SubElement(record, "disks")
    record.append(_inactive_view(dom.live, keep_empty_stores=True))
    if dom.config is not None:
        inactive = copy.deepcopy(dom.config)
        inactive.tag = "inactiveDomain"
        record.append(inactive)
    return record


def _overlay_path(spec: etree._Element, disk: etree._Element, name: str) -> str | None:
    """The overlay file of ``disk``: as the snapshot XML says, else beside a file source."""
    wanted = spec.find(f"disks/disk[@name='{_target_dev(disk)}']")
    if wanted is not None and wanted.get("snapshot") == "no":
        return None
    if wanted is not None and wanted.find("source") is not None:
        return wanted.find("source").get("file")
    path = _local_path(disk)
    if path is None:
        raise _error(VIR_ERR_CONFIG_UNSUPPORTED, VIR_FROM_DOMAIN, "unsupported configuration: "
                     f"cannot generate external snapshot name for disk '{_target_dev(disk)}' "
                     "without source")
    return f"{os.path.splitext(path)[0]}.{name}"


def _add_overlay(dom: _Domain, live: etree._Element, config: etree._Element | None,
                 overlay: str) -> None:
    """Put qcow2 ``overlay`` on top; the old source goes down into <backingStore>."""
    if not os.path.exists(overlay):
        with builtins.open(overlay, "wb"):  # QEMU creates the overlay (qcow2)
            pass
    dom.source_index += 1
    _push_layer(live, overlay, str(dom.source_index))
    if config is not None:
        _push_layer(config, overlay, None)


def _push_layer(disk: etree._Element, overlay: str, index: str | None) -> None:
    source, chain, driver = disk.find("source"), disk.find("backingStore"), disk.find("driver")
    store = etree.Element("backingStore", type=disk.get("type", "file"))
    if index is not None and source.get("index"):
        store.set("index", source.get("index"))
    etree.SubElement(store, "format",
                     type="raw" if driver is None else driver.get("type", "raw"))
    source.addprevious(store)
    store.append(source)  # moves it
    if chain is not None:
        store.append(chain)
    elif index is not None:
        etree.SubElement(store, "backingStore")
    top = etree.Element("source", file=overlay)
    if index is not None:
        top.set("index", index)
    store.addprevious(top)
    disk.set("type", "file")
    if driver is not None:
        driver.set("type", "qcow2")


class virDomainSnapshot:
    def __init__(self, dom: virDomain, name: str) -> None:
        self._dom, self._name = dom, name

    def getName(self) -> str:
        return self._name

    def getDomain(self) -> virDomain:
        return self._dom

    def getXMLDesc(self, flags: int = 0) -> str:
        return _format(_snapshot(self._dom._state(), self._name))

    def delete(self, flags: int = 0) -> int:
        dom = self._dom._state()
        _snapshot(dom, self._name)
        if not flags & VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY:
            raise _error(VIR_ERR_NO_SUPPORT, VIR_FROM_QEMU, "this function is not supported "
                         "by the connection driver: fakelibvirt deletes snapshot metadata only")
        del dom.snapshots[self._name]
        return 0
