"""A fake iSCSI target on 127.0.0.1 that answers hvplug's login probe.

Just enough of RFC 7143 for ``hvplug.initiator.login_probe``: Login
Requests (security and operational stage), a SCSI REPORT LUNS in the
full-feature phase, and Logout.  ``mode`` sets how it answers:

- ``"admit"``: logs in without authentication (``AuthMethod=None``);
- ``"chap"``: asks for CHAP when offered, else authentication failure;
- ``"not_found"`` / ``"authz"``: status 0x0203 / 0x0202;
- ``"silent"``: accepts TCP and never answers;
- ``"close"``: closes the connection on the first PDU.

Every login's text keys are kept in ``logins`` (so tests can check that no
CHAP key was ever sent), and ``connections`` counts accepted connections.
Loopback only; everything ends with ``close()``.
"""

import socket
import struct
import threading

from hvplug.initiator import login_probe as lp


def login_response(request: bytes, *, status: int = 0, transit: bool = True,
                   csg: int = 0, nsg: int = 1, keys: dict | None = None,
                   tsih: int = 0, statsn: int = 0) -> bytes:
    """A Login Response to ``request`` (its BHS): same ISID and ITT."""
    data = lp.encode_text(keys or {})
    flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
    bhs = struct.pack(">BBBBB3s6sHI4xIIIBB10x", lp.OP_LOGIN_RSP, flags,
                      0, 0, 0, len(data).to_bytes(3, "big"), request[8:14], tsih,
                      struct.unpack_from(">I", request, 16)[0], statsn, 1, 2,
                      status >> 8, status & 0xFF)
    return bhs + data + b"\0" * (-len(data) % 4)


def report_luns_data(luns) -> bytes:
    entries = b"".join(bytes([0, lun]) + b"\0" * 6 for lun in luns)
    return struct.pack(">I4x", len(entries)) + entries


def data_in(request: bytes, data: bytes, statsn: int) -> bytes:
    """One final Data-In with status (S bit), for the command ``request``."""
    itt = struct.unpack_from(">I", request, 16)[0]
    bhs = struct.pack(">BBBBB3s8sIIIIIIII", lp.OP_DATA_IN, 0x80 | 0x01, 0, 0, 0,
                      len(data).to_bytes(3, "big"), b"\0" * 8, itt, 0xFFFFFFFF, statsn,
                      1, 2, 0, 0, 0)
    return bhs + data + b"\0" * (-len(data) % 4)


def logout_response(request: bytes, statsn: int) -> bytes:
    itt = struct.unpack_from(">I", request, 16)[0]
    return struct.pack(">BBBB4x8xI4xIII4xHH4x", lp.OP_LOGOUT_RSP, 0x80, 0, 0, itt,
                       statsn, 1, 2, 0, 0)


class FakeISCSITarget:
    def __init__(self, mode: str = "admit", luns=(0, 1)):
        self.mode, self.luns = mode, tuple(luns)
        self.logins: list[dict] = []
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._closing.set()
        for conn in [self._sock, *self._open]:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _pdu(self, conn) -> tuple[bytes, bytes]:
        bhs = self._read(conn, 48)
        ahs, length = bhs[4] * 4, int.from_bytes(bhs[5:8], "big")
        rest = self._read(conn, ahs + length + (-length % 4)) if ahs or length else b""
        return bhs, rest[ahs:ahs + length]

    def _handle(self, conn) -> None:
        statsn = 100
        try:
            while True:
                bhs, data = self._pdu(conn)
                if self.mode == "silent":
                    continue
                if self.mode == "close":
                    return
                opcode = bhs[0] & 0x3F
                if opcode == lp.OP_LOGIN_REQ:
                    keys = lp.decode_text(data)
                    self.logins.append(keys)
                    conn.sendall(self._login_answer(bhs, keys, statsn))
                elif opcode == lp.OP_SCSI_CMD and bhs[32] == 0xA0:
                    conn.sendall(data_in(bhs, report_luns_data(self.luns), statsn))
                elif opcode == lp.OP_LOGOUT_REQ:
                    conn.sendall(logout_response(bhs, statsn))
                    return
                statsn += 1
        except (EOFError, OSError):
            pass
        finally:
            conn.close()

    def _login_answer(self, bhs: bytes, keys: dict, statsn: int) -> bytes:
        csg = (bhs[1] >> 2) & 3
        if csg == lp.OPERATIONAL:
            return login_response(bhs, csg=1, nsg=3, tsih=7, statsn=statsn,
                                  keys={"HeaderDigest": "None", "DataDigest": "None"})
        status = {"not_found": 0x0203, "authz": 0x0202}.get(self.mode, 0)
        if status:
            return login_response(bhs, status=status, transit=False, statsn=statsn)
        offered = keys.get("AuthMethod", "").split(",")
        if self.mode == "chap":
            if "CHAP" not in offered:
                return login_response(bhs, status=0x0201, transit=False, statsn=statsn,
                                      keys={"AuthMethod": "Reject"})
            return login_response(bhs, transit=False, csg=0, nsg=0, statsn=statsn,
                                  keys={"AuthMethod": "CHAP"})
        return login_response(bhs, csg=0, nsg=1, statsn=statsn,
                              keys={"AuthMethod": "None", "TargetPortalGroupTag": "1"})
