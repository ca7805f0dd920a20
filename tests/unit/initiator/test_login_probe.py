"""The iSCSI Login probe: PDUs against hand-built bytes, and whole probes
against the fake target of tests/fakeiscsitarget.py (127.0.0.1 only)."""

import socket
import struct
import threading

import pytest

from hvplug.initiator import login_probe as lp
from tests.fakeiscsitarget import FakeISCSITarget

ISID = bytes([0x80, 1, 2, 3, 0, 0])
TARGET, INITIATOR = "iqn.2010-10.org.openstack:volume-1", "iqn.1993-08.org.example:01:unit"


def response_bytes(*, status=0, flags=0x81, keys=b"", tsih=0, itt=0x11223344,
                   statsn=7, opcode=0x23) -> bytes:
    """A Login Response written out byte by byte, as RFC 7143 11.13 lays it out."""
    bhs = bytearray(48)
    bhs[0], bhs[1], bhs[2], bhs[3] = opcode, flags, 0, 0  # version max / active
    bhs[5:8] = len(keys).to_bytes(3, "big")
    bhs[8:14] = ISID
    bhs[14:16] = tsih.to_bytes(2, "big")
    bhs[16:20] = itt.to_bytes(4, "big")
    bhs[24:28] = statsn.to_bytes(4, "big")
    bhs[28:32] = (1).to_bytes(4, "big")  # ExpCmdSN
    bhs[32:36] = (2).to_bytes(4, "big")  # MaxCmdSN
    bhs[36], bhs[37] = status >> 8, status & 0xFF
    return bytes(bhs) + keys + b"\0" * (-len(keys) % 4)


def parse(raw: bytes) -> lp.LoginResponse:
    length = int.from_bytes(raw[5:8], "big")
    return lp.parse_login_response(lp.PDU(raw[:48], raw[48:48 + length]))


def test_login_request_layout():
    pdu = lp.login_request(isid=ISID, itt=0x01020304, cmdsn=5, exp_statsn=9, csg=0, nsg=1,
                           transit=True, keys={"InitiatorName": INITIATOR,
                                               "AuthMethod": "CHAP,None"})
    text = f"InitiatorName={INITIATOR}\0AuthMethod=CHAP,None\0".encode()
    assert pdu[0] == 0x43  # Immediate bit + opcode 0x03
    assert pdu[1] == 0x81  # T=1, CSG=0 (security), NSG=1 (operational)
    assert pdu[2:4] == b"\0\0"  # version max/min 0
    assert pdu[4] == 0 and int.from_bytes(pdu[5:8], "big") == len(text)
    assert pdu[8:14] == ISID and pdu[14:16] == b"\0\0"  # TSIH 0: a new session
    assert pdu[16:20] == bytes([1, 2, 3, 4]) and pdu[20:22] == b"\0\0"  # ITT, CID
    assert struct.unpack(">II", pdu[24:32]) == (5, 9)  # CmdSN, ExpStatSN
    assert pdu[32:48] == b"\0" * 16
    assert pdu[48:48 + len(text)] == text
    assert len(pdu) % 4 == 0 and pdu[48 + len(text):] == b"\0" * (len(pdu) - 48 - len(text))


def test_login_request_without_transit_has_no_next_stage():
    pdu = lp.login_request(isid=ISID, itt=1, cmdsn=1, exp_statsn=0, csg=1, nsg=3,
                           transit=False, keys={})
    assert pdu[1] == 0x04 and len(pdu) == 48  # CSG=1, T=0, NSG 0; no data segment
    assert lp.login_request(isid=ISID, itt=1, cmdsn=1, exp_statsn=0, csg=1, nsg=3,
                            transit=True, keys={})[1] == 0x87


def test_random_isid_is_of_the_random_type():
    isids = {lp.random_isid() for _ in range(50)}
    assert all(len(i) == 6 and i[0] == 0x80 and i[4:] == b"\0\0" for i in isids)
    assert len(isids) > 45


def test_text_keys_round_trip_and_padding_is_ignored():
    keys = {"TargetName": TARGET, "AuthMethod": "None", "Empty": ""}
    assert lp.decode_text(lp.encode_text(keys) + b"\0\0") == keys
    assert lp.decode_text(b"NoEquals\0A=b=c\0") == {"A": "b=c"}


def test_admitted_without_authentication():
    response = parse(response_bytes(flags=0x81, keys=b"AuthMethod=None\0"
                                    b"TargetPortalGroupTag=1\0", statsn=41))
    assert (response.transit, response.more, response.csg, response.nsg) == (True, False, 0, 1)
    assert (response.isid, response.itt, response.statsn) == (ISID, 0x11223344, 41)
    assert (response.exp_cmdsn, response.max_cmdsn, response.status) == (1, 2, 0)
    assert response.keys == {"AuthMethod": "None", "TargetPortalGroupTag": "1"}
    assert lp.classify(response)[0] is lp.Outcome.ADMITTED


def test_chap_required_is_known_from_the_first_answer():
    response = parse(response_bytes(flags=0x00, keys=b"AuthMethod=CHAP\0"))
    outcome, detail = lp.classify(response)
    assert outcome is lp.Outcome.AUTH_REQUIRED and "AuthMethod=CHAP" in detail
    assert lp.Outcome.AUTH_REQUIRED in lp.ANSWERED


@pytest.mark.parametrize(("status", "outcome", "words"), [
    (0x0203, lp.Outcome.NOT_FOUND, "target not found (0x0203)"),
    (0x0204, lp.Outcome.NOT_FOUND, "target removed (0x0204)"),
    (0x0202, lp.Outcome.AUTHORIZATION_FAILED, "authorization failure (0x0202)"),
    (0x0201, lp.Outcome.AUTHENTICATION_FAILED, "authentication failure (0x0201)"),
    (0x0301, lp.Outcome.REFUSED, "service unavailable (0x0301)"),
    (0x02FF, lp.Outcome.REFUSED, "unknown status (0x02ff)"),
])
def test_refusals(status, outcome, words):
    response = parse(response_bytes(status=status, flags=0))
    assert response.status == status
    assert lp.classify(response) == (outcome, words)
    assert outcome not in lp.ANSWERED


def test_redirect_names_the_new_address():
    response = parse(response_bytes(status=0x0101, flags=0,
                                    keys=b"TargetAddress=192.0.2.9:3260,1\0"))
    assert lp.classify(response) == (lp.Outcome.REDIRECTED,
                                     "target moved temporarily (0x0101) to 192.0.2.9:3260,1")


def test_a_pdu_that_is_not_a_login_response_is_refused():
    with pytest.raises(lp.ProtocolError, match="got 0x3f"):
        parse(response_bytes(opcode=0x3F))
    with pytest.raises(lp.ProtocolError, match="48 bytes"):
        lp.segment_lengths(b"\x23" * 20)


def test_report_luns_layouts():
    cdb = lp.report_luns_cdb(4096)
    assert cdb == bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0])
    data = (struct.pack(">I4x", 24) + bytes([0, 0]) + b"\0" * 6 + bytes([0, 7]) + b"\0" * 6
            + bytes([0x41, 0x2C]) + b"\0" * 6)  # 0, 7, and flat-space LUN 300
    assert lp.parse_report_luns(data) == [0, 7, 300]
    assert lp.parse_report_luns(struct.pack(">I4x", 0)) == []
    with pytest.raises(lp.ProtocolError):
        lp.parse_report_luns(b"\0\0")
    command = lp.scsi_command(itt=9, cmdsn=3, exp_statsn=4, cdb=cdb, read_length=4096)
    assert len(command) == 48 and command[0] == 0x01 and command[1] == 0xC1
    assert struct.unpack(">III", command[16:28]) == (9, 4096, 3) and command[32:44] == cdb


def test_logout_request_layout():
    pdu = lp.logout_request(itt=5, cmdsn=2, exp_statsn=8)
    assert len(pdu) == 48 and pdu[0] == 0x46 and pdu[1] == 0x80  # reason 0: close session
    assert struct.unpack(">I", pdu[16:20])[0] == 5
    assert struct.unpack(">II", pdu[24:32]) == (2, 8)


def probe(target, **kwargs):
    kwargs = {"connect_timeout": 2.0, "login_timeout": 2.0, **kwargs}
    return lp.probe("127.0.0.1", target.port, TARGET, INITIATOR, **kwargs)


def test_probe_admitted_and_report_luns():
    with FakeISCSITarget(luns=(0, 1, 4)) as target:
        result = probe(target, report_luns=True)
        assert result.outcome is lp.Outcome.ADMITTED and result.luns == (0, 1, 4)
        first = target.logins[0]
        assert first == {"InitiatorName": INITIATOR, "TargetName": TARGET,
                         "SessionType": "Normal", "AuthMethod": "CHAP,None"}
        assert target.logins[1]["HeaderDigest"] == "None"
        assert probe(target).luns is None  # without report_luns: login phase only
    assert result.portal == f"127.0.0.1:{target.port}" and result.target == TARGET


def test_probe_chap_never_sends_a_chap_key():
    with FakeISCSITarget("chap") as target:
        assert probe(target, report_luns=True).outcome is lp.Outcome.AUTH_REQUIRED
        assert probe(target, offer_chap=False).outcome is lp.Outcome.AUTHENTICATION_FAILED
        sent = [key for login in target.logins for key in login]
    assert not [key for key in sent if key.startswith("CHAP_")]
    assert [login["AuthMethod"] for login in target.logins] == ["CHAP,None", "None"]


@pytest.mark.parametrize(("mode", "outcome"), [("not_found", lp.Outcome.NOT_FOUND),
                                           ("authz", lp.Outcome.AUTHORIZATION_FAILED)])
def test_probe_refusals(mode, outcome):
    with FakeISCSITarget(mode) as target:
        assert probe(target).outcome is outcome


def test_probe_silent_and_closing_targets():
    with FakeISCSITarget("silent") as target:
        result = probe(target, login_timeout=0.2)
        assert result.outcome is lp.Outcome.NO_ANSWER
        assert result.detail == "did not answer an iSCSI login within 0.2 s"
    with FakeISCSITarget("close") as target:
        result = probe(target)
        assert result.outcome is lp.Outcome.NO_ANSWER and "closed the connection" in result.detail


def test_probe_of_a_dead_port_is_unreachable():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = lp.probe("127.0.0.1", port, TARGET, INITIATOR, connect_timeout=1.0,
                      login_timeout=1.0)
    assert result.outcome is lp.Outcome.UNREACHABLE and not result.answered


def test_an_answer_that_is_no_iscsi_is_no_answer():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def talk():
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n" + b"x" * 40)

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    try:
        result = lp.probe("127.0.0.1", server.getsockname()[1], TARGET, INITIATOR,
                          connect_timeout=1.0, login_timeout=2.0)
    finally:
        thread.join(5)
        server.close()
    assert result.outcome is lp.Outcome.NO_ANSWER and "Login Response" in result.detail


def test_probe_in_order_takes_the_first_accepted_and_does_not_wait_for_later_ones():
    with FakeISCSITarget("not_found") as refusing, FakeISCSITarget() as good, \
            FakeISCSITarget("silent") as silent:
        targets = [("127.0.0.1", t.port, TARGET) for t in (refusing, good, silent)]
        results = lp.probe_in_order(targets, lambda r: r.answered, initiator=INITIATOR,
                                    connect_timeout=1.0, login_timeout=30.0)
        # Returned while the silent third portal still waits out its 30 s.
        assert [r.outcome for r in results] == [lp.Outcome.NOT_FOUND, lp.Outcome.ADMITTED]
        results = lp.probe_in_order(targets[::2], lambda r: r.answered, initiator=INITIATOR,
                                    connect_timeout=1.0, login_timeout=0.2)
        assert [r.outcome for r in results] == [lp.Outcome.NOT_FOUND, lp.Outcome.NO_ANSWER]
