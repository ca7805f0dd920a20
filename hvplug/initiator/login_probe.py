"""A small iSCSI Login probe (RFC 7143): does a target answer a login, and how?

QEMU's initiator (libiscsi) logs in inside ``blockdev-add``, with no timeout
of its own: a portal that accepts TCP but never answers the login keeps
QEMU, and libvirt's state-change lock on the domain, waiting for minutes.
This module sends one Login Request from Python, before the domain is
touched, and reads the answer within a bounded time:

- the target admits the initiator without authentication;
- it answers and asks for authentication (``AuthMethod=CHAP``): known from
  its answer to the first Login Request, so the probe never sends, needs or
  sees a CHAP password;
- it refuses the login: target not found (0x0203), authorization failure
  (0x0202), authentication failure (0x0201), or another status;
- it redirects the initiator elsewhere (status class 1);
- it does not answer within the timeout, or closes the connection;
- the TCP connection itself fails (refused, unreachable, timed out).

With ``report_luns``, a target that admits without authentication is taken
through operational negotiation to the full-feature phase, asked ``REPORT
LUNS`` (SCSI opcode 0xA0) and logged out of: ``hvplug verify`` uses that to
check that the LUN exists.  Otherwise the connection is closed while still
in the login phase (the target never creates a session for it).

Each login uses a random ISID (RFC 7143 "Random" format), so it never
matches the ISID of a session QEMU holds with the same initiator name,
which would make the target reinstate (end) QEMU's session.

Nothing here imports the libvirt side: the caller passes the initiator IQN.
"""

import enum
import os
import socket
import struct
import threading
import time
from typing import Any, NamedTuple

from hvplug.utils import portals

# Opcodes (RFC 7143 11.1.1); the Immediate bit is 0x40 of byte 0.
OP_NOP_OUT, OP_SCSI_CMD, OP_LOGIN_REQ, OP_LOGOUT_REQ = 0x00, 0x01, 0x03, 0x06
OP_NOP_IN, OP_SCSI_RSP, OP_LOGIN_RSP, OP_DATA_IN = 0x20, 0x21, 0x23, 0x25
OP_LOGOUT_RSP, OP_ASYNC, OP_REJECT = 0x26, 0x32, 0x3F
IMMEDIATE = 0x40
# The first byte of every PDU a target sends: its opcode, both high bits 0.
TARGET_OPCODES = frozenset({0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3F})

# Login stages (CSG/NSG).
SECURITY, OPERATIONAL, FULL_FEATURE = 0, 1, 3
TRANSIT, CONTINUE = 0x80, 0x40

BHS_LEN = 48
MAX_RECV_DATA = 8192  # what the probe declares it can receive per PDU
MAX_DATA_SEGMENT = 1 << 20  # refuse to read a claimed segment larger than this
MAX_LOGIN_ROUNDS = 8
REPORT_LUNS_ALLOCATION = 4096  # 511 LUNs

# Operational keys the probe offers: the RFC defaults, no digests.
OPERATIONAL_KEYS = {
    "HeaderDigest": "None", "DataDigest": "None",
    "MaxRecvDataSegmentLength": str(MAX_RECV_DATA), "ErrorRecoveryLevel": "0",
    "InitialR2T": "Yes", "ImmediateData": "No", "MaxConnections": "1",
    "MaxBurstLength": "262144", "FirstBurstLength": "65536",
    "DefaultTime2Wait": "0", "DefaultTime2Retain": "0", "MaxOutstandingR2T": "1",
    "DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes",
}

STATUS_AUTHENTICATION_FAILED = 0x0201
STATUS_AUTHORIZATION_FAILED = 0x0202
STATUS_NOT_FOUND = 0x0203
STATUS_REMOVED = 0x0204

# RFC 7143 11.13.5, for messages.
STATUS_TEXT = {
    0x0000: "success",
    0x0101: "target moved temporarily", 0x0102: "target moved permanently",
    0x0200: "initiator error", 0x0201: "authentication failure",
    0x0202: "authorization failure", 0x0203: "target not found",
    0x0204: "target removed", 0x0205: "unsupported version",
    0x0206: "too many connections", 0x0207: "missing parameter",
    0x0208: "cannot include in session", 0x0209: "session type not supported",
    0x020A: "session does not exist", 0x020B: "invalid request during login",
    0x0300: "target error", 0x0301: "service unavailable", 0x0302: "out of resources",
}


def status_text(status: int) -> str:
    name = STATUS_TEXT.get(status, "unknown status")
    return f"{name} (0x{status:04x})"


class Outcome(enum.Enum):
    ADMITTED = "admitted"  # logged in without authentication
    AUTH_REQUIRED = "authentication required"  # the target asked for CHAP (or other)
    REDIRECTED = "redirected"  # status class 1: the target lives elsewhere
    NOT_FOUND = "target not found"  # 0x0203, 0x0204
    AUTHORIZATION_FAILED = "authorization failure"  # 0x0202
    AUTHENTICATION_FAILED = "authentication failure"  # 0x0201
    REFUSED = "login refused"  # any other status
    NO_ANSWER = "no answer"  # TCP accepted, no Login Response in time (or closed)
    UNREACHABLE = "unreachable"  # no TCP connection


#: The target is there and speaks iSCSI for this IQN: attaching may go ahead.
ANSWERED = frozenset({Outcome.ADMITTED, Outcome.AUTH_REQUIRED, Outcome.REDIRECTED})


class LoginResult(NamedTuple):
    """What one probe found.  ``detail``: a human-readable reason."""

    outcome: Outcome
    portal: str
    target: str
    detail: str = ""
    status: int | None = None  # (status class << 8) | status detail
    auth_method: str | None = None  # the AuthMethod the target chose
    target_address: str | None = None  # where a redirect points
    luns: tuple[int, ...] | None = None  # REPORT LUNS, when asked and admitted
    luns_error: str | None = None  # why REPORT LUNS gave no list

    @property
    def answered(self) -> bool:
        return self.outcome in ANSWERED


class ProtocolError(Exception):
    """The peer's bytes are not what an iSCSI target sends here."""


class NoAnswer(Exception):
    """Nothing (more) arrived within the time left."""


# --- encoding -------------------------------------------------------------

def encode_text(keys: dict[str, str]) -> bytes:
    """``key=value\\0`` pairs, in order (RFC 7143 6.1)."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys.items())


def decode_text(data: bytes) -> dict[str, str]:
    """The keys of a text data segment; padding and empty items ignored."""
    keys = {}
    for item in data.split(b"\0"):
        if not item:
            continue
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            keys[key] = value
    return keys


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def random_isid() -> bytes:
    """A 6-byte ISID of the "Random" type: T=10b, A=0, B and C random, D=0."""
    return bytes([0x80]) + os.urandom(3) + b"\0\0"


def login_request(*, isid: bytes, itt: int, cmdsn: int, exp_statsn: int,
                  csg: int, nsg: int, transit: bool, keys: dict[str, str],
                  tsih: int = 0, cid: int = 0) -> bytes:
    """A Login Request PDU (RFC 7143 11.12): BHS plus padded text segment."""
    data = encode_text(keys)
    flags = (TRANSIT if transit else 0) | (csg << 2) | (nsg if transit else 0)
    bhs = struct.pack(">BBBBB3s6sHIHHII16x", IMMEDIATE | OP_LOGIN_REQ, flags, 0, 0, 0,
                      len(data).to_bytes(3, "big"), isid, tsih, itt, cid, 0,
                      cmdsn, exp_statsn)
    return bhs + _pad(data)


def scsi_command(*, itt: int, cmdsn: int, exp_statsn: int, cdb: bytes,
                 read_length: int, lun: int = 0) -> bytes:
    """A SCSI Command PDU (RFC 7143 11.3) that reads ``read_length`` bytes."""
    flags = 0x80 | 0x40 | 0x01  # Final, Read, ATTR simple
    return struct.pack(">BBHB3s8sIIII16s", OP_SCSI_CMD, flags, 0, 0, b"\0\0\0",
                       _lun_field(lun), itt, read_length, cmdsn, exp_statsn,
                       cdb.ljust(16, b"\0"))


def report_luns_cdb(allocation: int = REPORT_LUNS_ALLOCATION) -> bytes:
    """REPORT LUNS (SPC-4 6.33), SELECT REPORT 0: every LUN."""
    return struct.pack(">BBBxxxIxB", 0xA0, 0, 0, allocation, 0)


def logout_request(*, itt: int, cmdsn: int, exp_statsn: int) -> bytes:
    """A Logout Request (RFC 7143 11.14), reason 0: close the session."""
    return struct.pack(">BBxx4x8xIHxxII16x", IMMEDIATE | OP_LOGOUT_REQ, 0x80,
                       itt, 0, cmdsn, exp_statsn)


def _lun_field(lun: int) -> bytes:
    if lun < 256:
        return bytes([0, lun]) + b"\0" * 6
    return bytes([0x40 | (lun >> 8) & 0x3F, lun & 0xFF]) + b"\0" * 6


# --- decoding -------------------------------------------------------------

class PDU(NamedTuple):
    """A received PDU: its 48-byte BHS and data segment (padding removed)."""

    bhs: bytes
    data: bytes = b""

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    @property
    def flags(self) -> int:
        return self.bhs[1]

    @property
    def itt(self) -> int:
        return struct.unpack_from(">I", self.bhs, 16)[0]

    @property
    def statsn(self) -> int:
        return struct.unpack_from(">I", self.bhs, 24)[0]


def segment_lengths(bhs: bytes) -> tuple[int, int]:
    """``(AHS bytes, data segment bytes)`` a BHS announces."""
    if len(bhs) != BHS_LEN:
        raise ProtocolError(f"a PDU header is {BHS_LEN} bytes, got {len(bhs)}")
    return bhs[4] * 4, int.from_bytes(bhs[5:8], "big")


class LoginResponse(NamedTuple):
    transit: bool
    more: bool  # the C bit: the target's text continues in the next PDU
    csg: int
    nsg: int
    version_active: int
    isid: bytes
    tsih: int
    itt: int
    statsn: int
    exp_cmdsn: int
    max_cmdsn: int
    status: int
    keys: dict[str, str]


def parse_login_response(pdu: PDU) -> LoginResponse:
    """A Login Response (RFC 7143 11.13); ProtocolError if it is not one."""
    if pdu.opcode != OP_LOGIN_RSP:
        raise ProtocolError(f"expected a Login Response (opcode 0x23), got 0x{pdu.opcode:02x}")
    bhs = pdu.bhs
    isid, tsih, itt = bhs[8:14], *struct.unpack_from(">HI", bhs, 14)
    statsn, exp_cmdsn, max_cmdsn = struct.unpack_from(">III", bhs, 24)
    return LoginResponse(
        transit=bool(bhs[1] & TRANSIT), more=bool(bhs[1] & CONTINUE),
        csg=(bhs[1] >> 2) & 3, nsg=bhs[1] & 3, version_active=bhs[3],
        isid=isid, tsih=tsih, itt=itt, statsn=statsn, exp_cmdsn=exp_cmdsn,
        max_cmdsn=max_cmdsn, status=(bhs[36] << 8) | bhs[37], keys=decode_text(pdu.data))


def parse_report_luns(data: bytes) -> list[int]:
    """The LUN numbers of REPORT LUNS parameter data (peripheral and flat addressing)."""
    if len(data) < 8:
        raise ProtocolError(f"REPORT LUNS returned {len(data)} bytes, fewer than its header")
    length = struct.unpack_from(">I", data, 0)[0]
    luns = []
    for offset in range(8, min(len(data), 8 + length) - 7, 8):
        first, second = data[offset], data[offset + 1]
        method = first >> 6
        if method == 0:  # peripheral device addressing, bus 0
            luns.append(second if not first & 0x3F else ((first & 0x3F) << 8) | second)
        elif method == 1:  # flat space addressing
            luns.append(((first & 0x3F) << 8) | second)
    return luns


def classify(response: LoginResponse) -> tuple[Outcome, str]:
    """The outcome of the first Login Response, and a detail for messages."""
    status = response.status
    if status >> 8 == 1:
        where = response.keys.get("TargetAddress", "an address it did not give")
        return Outcome.REDIRECTED, f"{status_text(status)} to {where}"
    if status in (STATUS_NOT_FOUND, STATUS_REMOVED):
        return Outcome.NOT_FOUND, status_text(status)
    if status == STATUS_AUTHORIZATION_FAILED:
        return Outcome.AUTHORIZATION_FAILED, status_text(status)
    if status == STATUS_AUTHENTICATION_FAILED:
        return Outcome.AUTHENTICATION_FAILED, status_text(status)
    if status:
        return Outcome.REFUSED, status_text(status)
    method = response.keys.get("AuthMethod")
    if method and method != "None":
        return Outcome.AUTH_REQUIRED, f"the target asks for AuthMethod={method}"
    if not response.transit and response.nsg != OPERATIONAL and not method:
        # No AuthMethod chosen and no stage change: the target wants more.
        return Outcome.AUTH_REQUIRED, "the target did not leave security negotiation"
    return Outcome.ADMITTED, "logged in without authentication"


# --- the conversation -----------------------------------------------------

class _Connection:
    """A socket with one deadline for everything read from it."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline = sock, deadline

    def send(self, data: bytes) -> None:
        self._arm()
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise NoAnswer("the target took no data") from None
        except OSError as exc:
            raise ProtocolError(f"sending failed: {exc.strerror or exc}") from None

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise NoAnswer("no answer in time")
        self.sock.settimeout(left)

    def _read(self, count: int) -> bytes:
        chunks, got = [], 0
        while got < count:
            self._arm()
            try:
                chunk = self.sock.recv(min(count - got, 65536))
            except TimeoutError:
                raise NoAnswer("no answer in time") from None
            except OSError as exc:
                raise ProtocolError(f"the connection failed: {exc.strerror or exc}") from None
            if not chunk:
                raise ProtocolError("the target closed the connection"
                                    + (" in the middle of a PDU" if got else ""))
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def receive(self) -> PDU:
        bhs = self._read(BHS_LEN)
        if bhs[0] not in TARGET_OPCODES:  # no segment length of a stranger is trusted
            raise ProtocolError(f"the answer is not an iSCSI Login Response "
                                f"(it starts with byte 0x{bhs[0]:02x})")
        ahs, length = segment_lengths(bhs)
        if length > MAX_DATA_SEGMENT:
            raise ProtocolError(f"the target announced a {length}-byte data segment")
        rest = self._read(ahs + length + (-length % 4)) if ahs or length else b""
        return PDU(bhs, rest[ahs:ahs + length])


class _Session:
    """One login conversation's sequence numbers."""

    def __init__(self, conn: _Connection, initiator: str, target: str):
        self.conn, self.initiator, self.target = conn, initiator, target
        self.isid = random_isid()
        self.itt = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
        self.cmdsn = 1
        self.exp_statsn = 0
        self.tsih = 0

    def _take(self, pdu: PDU) -> PDU:
        if pdu.opcode in (OP_LOGIN_RSP, OP_SCSI_RSP, OP_LOGOUT_RSP) or (
                pdu.opcode == OP_DATA_IN and pdu.flags & 0x01):
            self.exp_statsn = (pdu.statsn + 1) & 0xFFFFFFFF
        return pdu

    def login(self, csg: int, nsg: int, transit: bool, keys: dict) -> LoginResponse:
        self.conn.send(login_request(isid=self.isid, itt=self.itt, cmdsn=self.cmdsn,
                                     exp_statsn=self.exp_statsn, csg=csg, nsg=nsg,
                                     transit=transit, keys=keys, tsih=self.tsih))
        pdu = self._take(self.conn.receive())
        if pdu.opcode == OP_REJECT:
            raise ProtocolError("the target rejected the Login Request PDU")
        response = parse_login_response(pdu)
        # Several rounds without the C bit: the target's text comes in pieces.
        text = dict(response.keys)
        rounds = 1
        while response.more and not response.status:
            rounds += 1
            if rounds > MAX_LOGIN_ROUNDS:
                raise ProtocolError("the target's login text never ended")
            self.conn.send(login_request(isid=self.isid, itt=self.itt, cmdsn=self.cmdsn,
                                         exp_statsn=self.exp_statsn, csg=csg, nsg=nsg,
                                         transit=False, keys={}, tsih=self.tsih))
            response = parse_login_response(self._take(self.conn.receive()))
            text.update(response.keys)
        if response.tsih:
            self.tsih = response.tsih
        return response._replace(keys=text)

    def to_full_feature(self, response: LoginResponse) -> None:
        """From an admitted security stage through operational negotiation."""
        keys = OPERATIONAL_KEYS
        for _ in range(MAX_LOGIN_ROUNDS):
            if response.status:
                raise ProtocolError(f"the login stopped: {status_text(response.status)}")
            if response.transit and response.nsg == FULL_FEATURE:
                return
            response = self.login(OPERATIONAL, FULL_FEATURE, True, keys)
            keys = {}
        raise ProtocolError("the target never reached the full-feature phase")

    def report_luns(self) -> list[int]:
        itt = (self.itt + 1) & 0x7FFFFFFF
        self.conn.send(scsi_command(itt=itt, cmdsn=self.cmdsn, exp_statsn=self.exp_statsn,
                                    cdb=report_luns_cdb(), read_length=REPORT_LUNS_ALLOCATION))
        self.cmdsn += 1
        data = bytearray()
        while True:
            pdu = self._take(self.conn.receive())
            if pdu.opcode in (OP_NOP_IN, OP_ASYNC):
                continue
            if pdu.opcode == OP_REJECT:
                raise ProtocolError("the target rejected the SCSI command")
            if pdu.itt != itt:
                continue
            if pdu.opcode == OP_DATA_IN:
                offset = struct.unpack_from(">I", pdu.bhs, 40)[0]
                data[offset:offset + len(pdu.data)] = pdu.data
                if pdu.flags & 0x01:  # S: the status came with the data
                    return self._luns(pdu.bhs[3], bytes(data))
            elif pdu.opcode == OP_SCSI_RSP:
                if pdu.bhs[2]:
                    raise ProtocolError(f"the target's iSCSI response was 0x{pdu.bhs[2]:02x}")
                return self._luns(pdu.bhs[3], bytes(data))
            else:
                raise ProtocolError(f"unexpected PDU opcode 0x{pdu.opcode:02x}")

    @staticmethod
    def _luns(scsi_status: int, data: bytes) -> list[int]:
        if scsi_status:
            raise ProtocolError(f"REPORT LUNS ended with SCSI status 0x{scsi_status:02x}")
        return parse_report_luns(data)

    def logout(self) -> None:
        self.conn.send(logout_request(itt=(self.itt + 2) & 0x7FFFFFFF, cmdsn=self.cmdsn,
                                      exp_statsn=self.exp_statsn))
        while self.conn.receive().opcode != OP_LOGOUT_RSP:
            pass


def probe(host: str, port: int, target: str, initiator: str, *,
          connect_timeout: float, login_timeout: float,
          offer_chap: bool = True, report_luns: bool = False) -> LoginResult:
    """Send one Login Request for ``target`` as ``initiator``; what came back.

    ``connect_timeout`` bounds the TCP connection, ``login_timeout`` every
    exchange after it together (so the whole probe takes at most their
    sum).  ``offer_chap``: offer ``AuthMethod=CHAP,None`` (the target then
    says whether it wants CHAP) rather than ``None`` alone.
    """
    portal = portals.format_portal(host, port)

    def result(outcome: Outcome, detail: str, **more) -> LoginResult:
        return LoginResult(outcome, portal, target, detail, **more)

    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except TimeoutError:
        return result(Outcome.UNREACHABLE, f"no TCP connection within {connect_timeout} s")
    except OSError as exc:
        return result(Outcome.UNREACHABLE, exc.strerror or str(exc))
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = _Session(_Connection(sock, time.monotonic() + login_timeout),
                           initiator, target)
        keys = {"InitiatorName": initiator, "TargetName": target, "SessionType": "Normal",
                "AuthMethod": "CHAP,None" if offer_chap else "None"}
        try:
            response = session.login(SECURITY, OPERATIONAL, True, keys)
        except NoAnswer:
            return result(Outcome.NO_ANSWER,
                          f"did not answer an iSCSI login within {login_timeout} s")
        except ProtocolError as exc:
            return result(Outcome.NO_ANSWER, f"did not answer the iSCSI login: {exc}")
        outcome, detail = classify(response)
        found = result(outcome, detail, status=response.status,
                       auth_method=response.keys.get("AuthMethod"),
                       target_address=response.keys.get("TargetAddress"))
        if outcome is not Outcome.ADMITTED or not report_luns:
            return found
        try:
            session.to_full_feature(response)
            luns = tuple(session.report_luns())
        except (NoAnswer, ProtocolError) as exc:
            return found._replace(luns_error=str(exc))
        try:
            session.logout()
        except (NoAnswer, ProtocolError):
            pass  # closing the connection ends the session as well
        return found._replace(luns=luns)


PARALLEL_PROBES = 16  # probes in flight at once for a list of portals


def probe_in_order(targets: list[tuple[str, int, str]], accept, **kwargs) -> list[LoginResult]:
    """Probe ``(host, port, iqn)`` targets at once; results up to the first accepted one.

    The returned list holds, in the given order, the results of every
    target up to and including the first whose result ``accept(result)``
    takes (all of them when none is taken).  At most :data:`PARALLEL_PROBES`
    run at a time, a new one starting as an earlier one ends, so a list of
    thousands of portals never starts thousands of threads.  Probes of later
    targets go on in daemon threads and end within their own timeouts, so a
    silent later portal never delays the answer.  ``kwargs`` go to
    :func:`probe`.
    """
    if len(targets) == 1:
        return [probe(*targets[0], **kwargs)]
    slots: list[list[Any]] = [[threading.Event(), None] for _ in targets]
    places = threading.BoundedSemaphore(PARALLEL_PROBES)

    def run(slot, target):
        try:
            slot[1] = probe(*target, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a probe's own bug must not hang the caller
            host, port, iqn = target
            slot[1] = LoginResult(Outcome.NO_ANSWER, portals.format_portal(host, port), iqn,
                                  f"the probe failed: {exc}")
        finally:
            places.release()
            slot[0].set()

    def start_all():
        for slot, target in zip(slots, targets, strict=True):
            places.acquire()
            threading.Thread(target=run, args=(slot, target), daemon=True,
                             name="iscsi-login-probe").start()

    threading.Thread(target=start_all, daemon=True, name="iscsi-login-probes").start()
    results = []
    for done, slot in ((s[0], s) for s in slots):
        done.wait()
        results.append(slot[1])
        if accept(slot[1]):
            break
    return results
