"""A client of tgtd's management socket: what ``tgtadm`` does, without forking.

``tgtadm --mode account --op new --password P`` puts the CHAP password in a
process argument list, where any local user can read it.  tgtadm is only a
thin client of a unix stream socket (``/var/run/tgtd/socket.<port>``), so we
speak its protocol ourselves: one request per connection, a fixed 120-byte
``struct tgtadm_req`` header, then the parameters as one NUL-terminated
``key=value,key=value`` string.  tgtd answers ``struct tgtadm_rsp`` (error
number, total length *including* the 8-byte header) followed by text for
``show`` requests.  tgtd only answers peers running as uid 0 / gid 0.

Layouts and numbers are those of tgt 1.0.85 (Debian 12); the byte-for-byte
equality with tgtadm's own requests is checked in the unit tests.
"""

import dataclasses
import enum
import errno
import logging
import random
import socket
import struct

from hvplug import exception
from hvplug.exception import TgtdError, TgtdIPCError, TgtdUnavailable
from hvplug.utils import masking

LOG = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/run/tgtd/socket.0"
ALL_LUNS = 2**64 - 1  # tgtadm sends lun = UINT64_MAX when --lun is not given


class Mode(enum.IntEnum):  # enum tgtadm_mode
    SYSTEM = 0
    TARGET = 1
    DEVICE = 2  # tgtadm's "logicalunit"
    PORTAL = 3
    LLD = 4
    SESSION = 5
    CONNECTION = 6
    ACCOUNT = 7


class Op(enum.IntEnum):  # enum tgtadm_op
    NEW = 0
    DELETE = 1
    SHOW = 2
    BIND = 3
    UNBIND = 4
    UPDATE = 5
    STATS = 6
    START = 7
    STOP = 8


class AccountDir(enum.IntEnum):  # enum tgtadm_account_dir
    INCOMING = 0
    OUTGOING = 1


class Err(enum.IntEnum):  # enum tgtadm_errno, with tgtadm's own wording
    text: str

    # ``text`` has a default only for type checkers, which read ``Err(code)``
    # as a call of this: it is a lookup by value, which never calls it.
    def __new__(cls, value: int, text: str = "") -> "Err":
        member = int.__new__(cls, value)
        member._value_ = value
        member.text = text
        return member

    SUCCESS = 0, "success"
    UNKNOWN_ERR = 1, "unknown error"
    NOMEM = 2, "out of memory"
    NO_DRIVER = 3, "can't find the driver"
    NO_TARGET = 4, "can't find the target"
    NO_LUN = 5, "can't find the logical unit"
    NO_SESSION = 6, "can't find the session"
    NO_CONNECTION = 7, "can't find the connection"
    NO_BINDING = 8, "can't find the binding"
    TARGET_EXIST = 9, "this target already exists"
    LUN_EXIST = 10, "this logical unit number already exists"
    BINDING_EXIST = 11, "this binding already exists"
    ACL_EXIST = 12, "this access control rule already exists"
    ACL_NOEXIST = 13, "this access control rule does not exist"
    USER_EXIST = 14, "this account already exists"
    NO_USER = 15, "can't find the account"
    TOO_MANY_USER = 16, "too many accounts"
    INVALID_REQUEST = 17, "invalid request"
    OUTACCOUNT_EXIST = 18, "this target already has an outgoing account"
    TARGET_ACTIVE = 19, "this target is still active"
    LUN_ACTIVE = 20, "this logical unit is still active"
    DRIVER_ACTIVE = 21, "this driver is busy"
    UNSUPPORTED_OPERATION = 22, "this operation isn't supported"
    UNKNOWN_PARAM = 23, "unknown parameter"
    PREVENT_REMOVAL = 24, "this device has Prevent Removal set"


# mode, op, lld[64], len, tid, sid, lun, cid, host_no, device_type, ac_dir,
# pack, force: native byte order, no padding (every field is aligned).
REQ = struct.Struct("=II64sIiQQIIIIII")
RSP = struct.Struct("=II")  # err, len (header included)


def tgtd_error(operation: str, code: int) -> TgtdError:
    """The TgtdError for tgtd's answer ``code``, worded as tgtadm words it."""
    try:
        known = Err(code)
    except ValueError:
        return TgtdError(operation, code, "(unknown tgtadm_errno)")
    return TgtdError(operation, known, known.text)


def encode_params(params: dict | None) -> bytes:
    """``key=value`` pairs joined by ',' and NUL-terminated, as tgtadm does."""
    if not params:
        return b""
    for key, value in params.items():
        # tgtd separates parameters with ',' (and keys from values with
        # '='): such a parameter would be misread, or be another one.
        if any(c in str(key) for c in ",=\0") or any(c in str(value) for c in ",\0"):
            raise exception.InvalidInput(
                reason=f"tgtd parameter '{key}' must not contain ',' or NUL "
                       "(nor '=' in its name)")
    text = ",".join(f"{key}={value}" for key, value in params.items())
    return text.encode() + b"\0"


def encode_request(mode: int, op: int, params: dict | None = None, *,
                   lld: str = "iscsi", tid: int = -1, lun: int | None = None,
                   sid: int = 0, cid: int = 0, host_no: int = 0,
                   device_type: int = 0, ac_dir: int = AccountDir.INCOMING,
                   force: bool = False) -> bytes:
    """The bytes tgtadm would write for the same request."""
    payload = encode_params(params)
    lld_bytes = lld.encode()
    if len(lld_bytes) >= 64:
        raise exception.InvalidInput(reason=f"lld name '{lld}' is too long")
    header = REQ.pack(mode, op, lld_bytes, REQ.size + len(payload), tid, sid,
                      ALL_LUNS if lun is None else lun, cid, host_no,
                      device_type, ac_dir, 0, int(force))
    return header + payload


def describe(mode: int, op: int, params: dict | None, tid: int,
             lun: int | None) -> str:
    """A loggable description of a request; secrets masked."""
    words = [f"{Mode(mode).name.lower()} {Op(op).name.lower()}"]
    if tid != -1:
        words.append(f"tid={tid}")
    if lun is not None:
        words.append(f"lun={lun}")
    words += [f"{k}={v}" for k, v in masking.mask_dict(params or {}).items()]
    return " ".join(words)


@dataclasses.dataclass
class LunInfo:
    lun: int
    type: str = ""
    size_mb: int = 0  # as tgtd prints it: whole decimal MB (10**6 bytes)
    block_size: int = 0
    online: bool = True
    readonly: bool = False
    bstype: str = ""
    backing_store: str | None = None
    bsoflags: str = ""


@dataclasses.dataclass
class SessionInfo:
    nexus: int
    initiator: str = ""
    alias: str | None = None
    addresses: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TargetInfo:
    tid: int
    iqn: str
    state: str = ""
    luns: dict[int, LunInfo] = dataclasses.field(default_factory=dict)
    accounts: list[str] = dataclasses.field(default_factory=list)  # incoming
    outgoing_account: str | None = None
    acls: list[str] = dataclasses.field(default_factory=list)
    sessions: list[SessionInfo] = dataclasses.field(default_factory=list)


def parse_targets(text: str) -> dict[int, TargetInfo]:
    """Parse ``tgtadm --mode target --op show`` text into tid -> TargetInfo."""
    targets: dict[int, TargetInfo] = {}
    target = lun = session = None
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if raw.startswith("Target "):
            tid, _, iqn = raw[len("Target "):].partition(": ")
            target = targets[int(tid)] = TargetInfo(int(tid), iqn.strip())
            section = ""
        elif target is None or not line:
            continue
        elif line.endswith(" information:"):
            section = line.split()[0]
        elif section == "System" and line.startswith("State:"):
            target.state = line.partition(":")[2].strip()
        elif section == "I_T":
            key, _, value = line.partition(": ")
            if key == "I_T nexus":
                session = SessionInfo(int(value))
                target.sessions.append(session)
            elif key == "Initiator" and session:
                name, _, alias = value.partition(" alias: ")
                session.initiator = name
                session.alias = None if alias in ("", "none") else alias
            elif key == "IP Address" and session:
                session.addresses.append(value)
        elif section == "LUN":
            key, _, value = line.partition(":")
            value = value.strip()
            if key == "LUN":
                lun = target.luns[int(value)] = LunInfo(int(value))
            elif lun is None:
                continue
            elif key == "Type":
                lun.type = value
            elif key == "Size":  # "8 MB, Block size: 512"
                size, _, block = value.partition(", Block size: ")
                lun.size_mb, lun.block_size = int(size.split()[0]), int(block)
            elif key in ("Online", "Readonly"):
                setattr(lun, key.lower(), value == "Yes")
            elif key == "Backing store type":
                lun.bstype = value
            elif key == "Backing store path":
                lun.backing_store = None if value == "None" else value
            elif key == "Backing store flags":
                lun.bsoflags = value
        elif section == "Account":
            if line.endswith(" (outgoing)"):
                target.outgoing_account = line[:-len(" (outgoing)")]
            else:
                target.accounts.append(line)
        elif section == "ACL":
            target.acls.append(line)
    return targets


class TgtdIPC:
    """Requests to tgtd over its management socket; no process is forked."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, lld: str = "iscsi",
                 timeout: float = 10.0):
        self.socket_path = socket_path
        self.lld = lld
        self.timeout = timeout

    def request(self, mode: int, op: int, params: dict | None = None, *,
                tid: int = -1, lun: int | None = None, sid: int = 0,
                cid: int = 0, host_no: int = 0, device_type: int = 0,
                ac_dir: int = AccountDir.INCOMING, force: bool = False) -> str:
        """Send one request; return tgtd's text, or raise TgtdError."""
        data = encode_request(mode, op, params, lld=self.lld, tid=tid,
                              lun=lun, sid=sid, cid=cid, host_no=host_no,
                              device_type=device_type, ac_dir=ac_dir,
                              force=force)
        what = describe(mode, op, params, tid, lun)
        LOG.debug("tgtd request: %s", what)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise TgtdUnavailable(path=self.socket_path) from exc
            except OSError as exc:
                raise self._ipc_error(exc) from exc
            try:
                sock.sendall(data)
                err, length = RSP.unpack(self._recv(sock, RSP.size))
                body = self._recv(sock, length - RSP.size)
            except OSError as exc:
                raise self._ipc_error(exc) from exc
        if err != Err.SUCCESS:
            raise tgtd_error(what, err)
        return body.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _recv(self, sock: socket.socket, size: int) -> bytes:
        chunks, left = [], size
        while left > 0:
            chunk = sock.recv(min(left, 1 << 20))
            if not chunk:
                raise TgtdIPCError(
                    path=self.socket_path,
                    reason="tgtd closed the connection without a full answer "
                           "(it answers only root: uid 0, gid 0)")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _ipc_error(self, exc: OSError) -> TgtdIPCError:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self.timeout}s"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            reason = "permission denied (tgtd's socket is for root only)"
        else:
            reason = exc.strerror or str(exc)
        return TgtdIPCError(path=self.socket_path, reason=reason)

    # Targets ----------------------------------------------------------
    def new_target(self, tid: int | None, iqn: str, start: int = 1) -> int:
        """Create target ``iqn``; with ``tid=None`` pick a free tid >= start."""
        if tid is not None:
            self.request(Mode.TARGET, Op.NEW, {"targetname": iqn}, tid=tid)
            return tid
        for _ in range(20):  # others may take the tid we found: retry
            tid = self.free_tid(start)
            try:
                self.request(Mode.TARGET, Op.NEW, {"targetname": iqn}, tid=tid)
            except TgtdError as exc:
                if exc.code != Err.TARGET_EXIST:
                    raise
                start = tid + 1 + random.randrange(8)  # noqa: S311 - spreads retries, not a secret
                continue
            return tid
        raise tgtd_error(f"target new targetname={iqn}", Err.TARGET_EXIST)

    def delete_target(self, tid: int, force: bool = True) -> None:
        self.request(Mode.TARGET, Op.DELETE, tid=tid, force=force)

    def show_targets(self) -> str:
        return self.request(Mode.TARGET, Op.SHOW)

    def show_target_params(self, tid: int) -> str:
        """The iSCSI parameters of one target (``--op show --tid``)."""
        return self.request(Mode.TARGET, Op.SHOW, tid=tid)

    def list_targets(self) -> dict[int, TargetInfo]:
        return parse_targets(self.show_targets())

    def free_tid(self, start: int = 1) -> int:
        return first_free_tid(self.list_targets(), start)

    # Logical units ----------------------------------------------------
    def new_lun(self, tid: int, lun: int, path: str, bstype: str | None = "rdwr",
                params: dict | None = None) -> None:
        """Add LUN ``lun`` backed by ``path``; ``params`` e.g. bsoflags."""
        values = {"path": path}
        if bstype:
            values["bstype"] = bstype
        values.update(params or {})
        self.request(Mode.DEVICE, Op.NEW, values, tid=tid, lun=lun)

    def delete_lun(self, tid: int, lun: int) -> None:
        self.request(Mode.DEVICE, Op.DELETE, tid=tid, lun=lun)

    # CHAP accounts ------------------------------------------------------
    def new_account(self, user: str, password: str) -> None:
        self.request(Mode.ACCOUNT, Op.NEW, {"user": user, "password": password})

    def delete_account(self, user: str) -> None:
        self.request(Mode.ACCOUNT, Op.DELETE, {"user": user})

    def bind_account(self, tid: int, user: str, outgoing: bool = False) -> None:
        self.request(Mode.ACCOUNT, Op.BIND, {"user": user}, tid=tid,
                     ac_dir=AccountDir.OUTGOING if outgoing else AccountDir.INCOMING)

    def unbind_account(self, tid: int, user: str, outgoing: bool = False) -> None:
        self.request(Mode.ACCOUNT, Op.UNBIND, {"user": user}, tid=tid,
                     ac_dir=AccountDir.OUTGOING if outgoing else AccountDir.INCOMING)

    def list_accounts(self) -> list[str]:
        text = self.request(Mode.ACCOUNT, Op.SHOW)
        return [line.strip() for line in text.splitlines()[1:] if line.strip()]

    # Initiator ACLs -----------------------------------------------------
    def bind_initiator(self, tid: int, address: str | None = None,
                       name: str | None = None) -> None:
        """Allow an initiator by address ('ALL', an IP, a CIDR) or by IQN."""
        self.request(Mode.TARGET, Op.BIND, _initiator(address, name), tid=tid)

def _initiator(address: str | None, name: str | None) -> dict:
    if (address is None) == (name is None):
        raise exception.InvalidInput(
            reason="give exactly one of an initiator address or name")
    if address is not None:
        return {"initiator-address": address}
    return {"initiator-name": name}


def tolerate(codes, call, *args, **kwargs) -> None:
    """``call(...)``; a TgtdError with one of ``codes`` means already done."""
    codes = codes if isinstance(codes, tuple) else (codes,)
    try:
        call(*args, **kwargs)
    except TgtdError as exc:
        if exc.code not in codes:
            raise


def first_free_tid(used, start: int = 1) -> int:
    """The lowest tid >= ``start`` (and >= 1) not in ``used`` (tids, or a dict by tid):
    the one tid allocator, for TgtdIPC.new_target and the tgt helper."""
    tid = max(start, 1)
    while tid in used:
        tid += 1
    return tid
