"""Unit tests of hvplug.target.tgtd_ipc: wire bytes, errors, show parsing.

No tgtd is needed: a fake tgtd listens on a unix socket in /tmp, records
each request and answers what the test scripted.
"""

import logging
import os
import pickle
import socket
import tempfile
import threading

import pytest

from hvplug import exception
from hvplug.target import tgtd_ipc
from hvplug.target.tgtd_ipc import Err, Mode, Op

TARGET = "iqn.2024-01.org.hvplug:cap901"
INITIATOR = "iqn.1993-08.org.debian:01:cap"
PASSWORD = "Pw-7f3c1e9a-never-shown"

# What the real tgtadm 1.0.85 (Debian 12) writes to /var/run/tgtd/socket.0,
# captured with
#   strace -f -e trace=connect,write -s 4096 -x tgtadm ARGS...
# the 120-byte header write followed by the parameter write (if any), in
# hex.  (The capture password "CapPassw0rd901" was a throwaway.)

CAPTURED = [
    pytest.param(
        lambda c: c.show_targets(),
        # $ tgtadm --lld iscsi --mode target --op show
        "010000000200000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "78000000ffffffff0000000000000000ffffffffffffffff"
        "000000000000000000000000000000000000000000000000",
        id="target-show",
    ),
    pytest.param(
        lambda c: c.new_target(901, TARGET),
        # $ tgtadm --lld iscsi --mode target --op new --tid 901 --targetname iqn.2024-01.org.hvplug:cap901
        "010000000000000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "a1000000850300000000000000000000ffffffffffffffff"
        "000000000000000000000000000000000000000000000000"
        "7461726765746e616d653d69716e2e323032342d30312e6f72672e6876706c75"
        "673a63617039303100",
        id="target-new",
    ),
    pytest.param(
        lambda c: c.new_lun(901, 1, "/tmp/hvtgt/lun.img", params={"bsoflags": "direct"}),
        # $ tgtadm --lld iscsi --mode logicalunit --op new --tid 901 --lun 1 --backing-store /tmp/hvtgt/lun.img --bstype rdwr --bsoflags direct
        "020000000000000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "ac0000008503000000000000000000000100000000000000"
        "000000000000000000000000000000000000000000000000"
        "706174683d2f746d702f68767467742f6c756e2e696d672c6273747970653d72"
        "6477722c62736f666c6167733d64697265637400",
        id="lun-new",
    ),
    pytest.param(
        lambda c: c.bind_initiator(901, address="ALL"),
        # $ tgtadm --lld iscsi --mode target --op bind --tid 901 --initiator-address ALL
        "010000000300000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "8e000000850300000000000000000000ffffffffffffffff"
        "000000000000000000000000000000000000000000000000"
        "696e69746961746f722d616464726573733d414c4c00",
        id="bind-address",
    ),
    pytest.param(
        lambda c: c.bind_initiator(901, name=INITIATOR),
        # $ tgtadm --lld iscsi --mode target --op bind --tid 901 --initiator-name iqn.1993-08.org.debian:01:cap
        "010000000300000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "a5000000850300000000000000000000ffffffffffffffff"
        "000000000000000000000000000000000000000000000000"
        "696e69746961746f722d6e616d653d69716e2e313939332d30382e6f72672e64"
        "656269616e3a30313a63617000",
        id="bind-name",
    ),
    pytest.param(
        lambda c: c.new_account("capuser901", "CapPassw0rd901"),
        # $ tgtadm --lld iscsi --mode account --op new --user capuser901 --password CapPassw0rd901
        "070000000000000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "a0000000ffffffff0000000000000000ffffffffffffffff"
        "000000000000000000000000000000000000000000000000"
        "757365723d636170757365723930312c70617373776f72643d43617050617373"
        "7730726439303100",
        id="account-new",
    ),
    pytest.param(
        lambda c: c.bind_account(901, "capuser901"),
        # $ tgtadm --lld iscsi --mode account --op bind --tid 901 --user capuser901
        "070000000300000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "88000000850300000000000000000000ffffffffffffffff"
        "000000000000000000000000000000000000000000000000"
        "757365723d6361707573657239303100",
        id="account-bind",
    ),
    pytest.param(
        lambda c: c.unbind_account(901, "capuser901", outgoing=True),
        # $ tgtadm --lld iscsi --mode account --op unbind --tid 901 --user capuser901 --outgoing
        "070000000400000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "88000000850300000000000000000000ffffffffffffffff"
        "000000000000000000000000010000000000000000000000"
        "757365723d6361707573657239303100",
        id="account-unbind-outgoing",
    ),
    pytest.param(
        lambda c: c.delete_lun(901, 1),
        # $ tgtadm --lld iscsi --mode logicalunit --op delete --tid 901 --lun 1
        "020000000100000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "780000008503000000000000000000000100000000000000"
        "000000000000000000000000000000000000000000000000",
        id="lun-delete",
    ),
    pytest.param(
        lambda c: c.delete_account("capuser901"),
        # $ tgtadm --lld iscsi --mode account --op delete --user capuser901
        "070000000100000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "88000000ffffffff0000000000000000ffffffffffffffff"
        "000000000000000000000000000000000000000000000000"
        "757365723d6361707573657239303100",
        id="account-delete",
    ),
    pytest.param(
        lambda c: c.delete_target(901),
        # $ tgtadm --lld iscsi --mode target --op delete --force --tid 901
        "010000000100000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "78000000850300000000000000000000ffffffffffffffff"
        "000000000000000000000000000000000000000001000000",
        id="target-delete-force",
    ),
    pytest.param(
        lambda c: c.list_accounts(),
        # $ tgtadm --lld iscsi --mode account --op show
        "070000000200000069736373690000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000"
        "78000000ffffffff0000000000000000ffffffffffffffff"
        "000000000000000000000000000000000000000000000000",
        id="account-show",
    ),
]


# `tgtadm --lld iscsi --mode target --op show` from tgt 1.0.85, stitched
# from two captures minutes apart: the I_T nexus lines come from a login
# (no CHAP) made before the incoming account was bound, because a login
# without CHAP is refused once one is.  tgtd ends "Backing store flags: "
# with a space; trailing spaces are stripped here.
SHOW = """\
Target 902: iqn.2024-01.org.hvplug:cap902
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 3
            Initiator: iqn.1993-08.org.debian:01:capinit alias: hvplug-capture
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     03860000
            SCSI SN: beaf9020
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags:
        LUN: 1
            Type: disk
            SCSI ID: IET     03860001
            SCSI SN: beaf9021
            Size: 8 MB, Block size: 512
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /tmp/hvtgt/lun.img
            Backing store flags:
        LUN: 2
            Type: disk
            SCSI ID: IET     03860002
            SCSI SN: beaf9022
            Size: 10 MB, Block size: 512
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /tmp/hvtgt/lun2.img
            Backing store flags: direct
    Account information:
        capin902
        capout902 (outgoing)
    ACL information:
        127.0.0.1
        10.0.0.0/8
        iqn.1993-08.org.debian:01:capinit
Target 903: iqn.2024-01.org.hvplug:cap903
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     03870000
            SCSI SN: beaf9030
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags:
    Account information:
    ACL information:
"""


class FakeTgtd:
    """A unix-socket server speaking tgtd's management protocol."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hvtgt")  # short: sun_path <= 107
        self.path = os.path.join(self.dir, "socket.0")
        self.requests: list[bytes] = []
        self.answers: list[tuple[int, bytes] | None] = []  # None: hang up
        self.stall: threading.Event | None = None  # answer once it is set
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def answer(self, err: int = 0, text: str | bytes = b"") -> None:
        if isinstance(text, str):
            text = text.encode() + b"\0"  # tgtd sends the text's NUL too
        self.answers.append((err, text))

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                try:
                    self._handle(conn)
                except OSError:  # the client gave up (timeout tests)
                    pass

    def _handle(self, conn: socket.socket) -> None:
        header = _recv(conn, tgtd_ipc.REQ.size)
        length = tgtd_ipc.REQ.unpack(header)[3]
        self.requests.append(header + _recv(conn, length - len(header)))
        if self.stall:
            self.stall.wait(5)
        answer = self.answers.pop(0) if self.answers else (0, b"")
        if answer is not None:
            err, text = answer
            conn.sendall(tgtd_ipc.RSP.pack(err, 8 + len(text)) + text)

    def close(self) -> None:
        self.server.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def _recv(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def tgtd():
    fake = FakeTgtd()
    yield fake
    fake.close()


@pytest.fixture
def ipc(tgtd):
    return tgtd_ipc.TgtdIPC(socket_path=tgtd.path, timeout=5)


# Wire format ------------------------------------------------------------

def test_struct_sizes_match_tgt():
    assert tgtd_ipc.REQ.size == 120
    assert tgtd_ipc.RSP.size == 8


@pytest.mark.parametrize(("call", "captured"), CAPTURED)
def test_request_bytes_equal_tgtadms(ipc, tgtd, call, captured):
    call(ipc)
    assert tgtd.requests == [bytes.fromhex(captured)]


def test_encode_request_defaults_are_tgtadms():
    data = tgtd_ipc.encode_request(Mode.SYSTEM, Op.SHOW)
    (mode, op, lld, length, tid, sid, lun, cid, host_no, device_type,
     ac_dir, pack, force) = tgtd_ipc.REQ.unpack(data)
    assert (mode, op, length, tid, lun) == (0, 2, 120, -1, 2**64 - 1)
    assert lld.rstrip(b"\0") == b"iscsi"
    assert (sid, cid, host_no, device_type, ac_dir, pack, force) == (0,) * 7


@pytest.mark.parametrize("params", [
    {"password": "pw,1"}, {"password": "pw\0" + "2"}, {"user": "us,er3"},
    {"a=b": "value4"},
])
def test_values_tgtd_would_misparse_are_refused_unsent(ipc, tgtd, params):
    with pytest.raises(exception.InvalidInput) as info:
        ipc.request(Mode.ACCOUNT, Op.NEW, params)
    for value in params.values():
        assert value not in str(info.value)
    assert tgtd.requests == []


def test_lld_name_too_long():
    with pytest.raises(exception.InvalidInput):
        tgtd_ipc.encode_request(Mode.TARGET, Op.SHOW, lld="x" * 64)


@pytest.mark.parametrize(("address", "name"), [(None, None), ("ALL", INITIATOR)])
def test_bind_initiator_needs_exactly_one(ipc, tgtd, address, name):
    with pytest.raises(exception.InvalidInput):
        ipc.bind_initiator(1, address=address, name=name)
    assert tgtd.requests == []


# Answers and errors -------------------------------------------------------

def test_show_text_is_returned_without_its_nul(ipc, tgtd):
    tgtd.answer(0, SHOW)
    assert ipc.show_targets() == SHOW


def test_large_answer_is_read_whole(ipc, tgtd):
    text = "x" * 3_000_000 + "\n"
    tgtd.answer(0, text)
    assert ipc.show_targets() == text


# Error numbers and wording of tgt 1.0.85, as read from tgtadm_strerror's
# table in the installed /usr/sbin/tgtadm (the enum is not in table order:
# LUN_EXIST is 10, BINDING_EXIST 11), and seen in tgtd's answers under strace.
TGT_ERRORS = {
    1: "unknown error", 2: "out of memory", 3: "can't find the driver",
    4: "can't find the target", 5: "can't find the logical unit",
    6: "can't find the session", 7: "can't find the connection",
    8: "can't find the binding", 9: "this target already exists",
    10: "this logical unit number already exists",
    11: "this binding already exists",
    12: "this access control rule already exists",
    13: "this access control rule does not exist",
    14: "this account already exists", 15: "can't find the account",
    16: "too many accounts", 17: "invalid request",
    18: "this target already has an outgoing account",
    19: "this target is still active", 20: "this logical unit is still active",
    21: "this driver is busy", 22: "this operation isn't supported",
    23: "unknown parameter", 24: "this device has Prevent Removal set",
}


@pytest.mark.parametrize(("code", "text"), sorted(TGT_ERRORS.items()))
def test_error_numbers_map_to_tgtadms_messages(ipc, tgtd, code, text):
    tgtd.answer(code)
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.new_target(7, TARGET)
    assert info.value.code == code
    assert isinstance(info.value.code, Err)
    assert str(info.value) == (
        f"tgtd refused target new tid=7 targetname={TARGET}: {text} "
        f"(tgtadm error {code}).")
    assert isinstance(info.value, exception.HvplugError)


def test_unknown_error_number(ipc, tgtd):
    tgtd.answer(99)
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.delete_lun(3, 1)
    assert info.value.code == 99
    assert "(unknown tgtadm_errno)" in str(info.value)


def test_missing_socket_is_tgtd_unavailable():
    ipc = tgtd_ipc.TgtdIPC(socket_path="/nonexistent/tgtd/socket.0")
    with pytest.raises(tgtd_ipc.TgtdUnavailable) as info:
        ipc.show_targets()
    assert "/nonexistent/tgtd/socket.0" in str(info.value)
    assert "systemctl start tgt" in str(info.value)


def test_stale_socket_is_tgtd_unavailable():
    with tempfile.TemporaryDirectory(prefix="hvtgt") as tmp:
        path = os.path.join(tmp, "socket.0")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(path)  # the file stays, nobody listens: ECONNREFUSED
        with pytest.raises(tgtd_ipc.TgtdUnavailable):
            tgtd_ipc.TgtdIPC(socket_path=path).show_targets()


def test_hang_up_without_answer(ipc, tgtd):
    tgtd.answers.append(None)
    with pytest.raises(tgtd_ipc.TgtdIPCError, match="closed the connection"):
        ipc.show_targets()


def test_no_answer_times_out(tgtd):
    tgtd.stall = threading.Event()
    ipc = tgtd_ipc.TgtdIPC(socket_path=tgtd.path, timeout=0.2)
    try:
        with pytest.raises(tgtd_ipc.TgtdIPCError, match="no answer within 0.2s"):
            ipc.show_targets()
    finally:
        tgtd.stall.set()


# Secrets ----------------------------------------------------------------

def test_password_is_in_no_log_record_and_no_exception(ipc, tgtd, caplog):
    caplog.set_level(logging.DEBUG)
    tgtd.answer(0)
    ipc.new_account("hvuser", PASSWORD)
    tgtd.answer(Err.USER_EXIST)
    with pytest.raises(tgtd_ipc.TgtdError) as info:
        ipc.new_account("hvuser", PASSWORD)
    assert PASSWORD.encode() in tgtd.requests[0]  # it did reach tgtd
    error = info.value
    for text in (str(error), repr(error), repr(error.args), repr(error.kwargs),
                 error.message, repr(pickle.dumps(error.kwargs))):
        assert PASSWORD not in text
    assert "password=***" in str(error)
    assert caplog.records, "the requests should have been logged"
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
        assert PASSWORD not in repr(record.args)


# Show text ----------------------------------------------------------------

def test_parse_targets():
    targets = tgtd_ipc.parse_targets(SHOW)
    assert sorted(targets) == [902, 903]
    t = targets[902]
    assert t.iqn == "iqn.2024-01.org.hvplug:cap902"
    assert t.state == "ready"
    assert t.accounts == ["capin902"]
    assert t.outgoing_account == "capout902"
    assert t.acls == ["127.0.0.1", "10.0.0.0/8",
                      "iqn.1993-08.org.debian:01:capinit"]
    assert t.sessions == [tgtd_ipc.SessionInfo(
        nexus=3, initiator="iqn.1993-08.org.debian:01:capinit",
        alias="hvplug-capture", addresses=["127.0.0.1"])]
    assert sorted(t.luns) == [0, 1, 2]
    assert t.luns[0] == tgtd_ipc.LunInfo(
        lun=0, type="controller", size_mb=0, block_size=1, bstype="null",
        backing_store=None)
    assert t.luns[2] == tgtd_ipc.LunInfo(
        lun=2, type="disk", size_mb=10, block_size=512, bstype="rdwr",
        backing_store="/tmp/hvtgt/lun2.img", bsoflags="direct")
    assert targets[903] == tgtd_ipc.TargetInfo(
        tid=903, iqn="iqn.2024-01.org.hvplug:cap903", state="ready",
        luns={0: t.luns[0]})


def test_parse_targets_nothing():
    assert tgtd_ipc.parse_targets("") == {}


def test_parse_session_without_alias():
    text = SHOW.replace(" alias: hvplug-capture", " alias: none")
    assert tgtd_ipc.parse_targets(text)[902].sessions[0].alias is None


def test_list_targets_and_free_tid(ipc, tgtd):
    tgtd.answer(0, SHOW)
    assert sorted(ipc.list_targets()) == [902, 903]
    tgtd.answer(0, SHOW)
    assert ipc.free_tid(902) == 904
    tgtd.answer(0, SHOW)
    assert ipc.free_tid() == 1


def test_new_target_without_tid_retries_a_taken_tid(ipc, tgtd):
    tgtd.answer(0, SHOW)              # free_tid(902) -> 904
    tgtd.answer(Err.TARGET_EXIST)     # somebody took 904 meanwhile
    tgtd.answer(0, SHOW)              # free_tid(905..912)
    tgtd.answer(0)
    tid = ipc.new_target(None, TARGET, start=902)
    assert 905 <= tid <= 912
    news = [tgtd_ipc.REQ.unpack(r[:120]) for r in tgtd.requests[1::2]]
    assert [(n[0], n[1], n[4]) for n in news] == [(1, 0, 904), (1, 0, tid)]


def test_list_accounts(ipc, tgtd):
    tgtd.answer(0, "Account list:\n    capin902\n    capout902\n")
    assert ipc.list_accounts() == ["capin902", "capout902"]


def test_tgtd_error_survives_pickling():
    error = tgtd_ipc.tgtd_error("target new tid=7", Err.TARGET_EXIST)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.code, str(copy)) == (Err.TARGET_EXIST, str(error))
