import socket

import pytest

from hvplug import exception
from hvplug.utils import portals


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.10:3260", ("192.0.2.10", 3260)),
    ("192.0.2.10", ("192.0.2.10", 3260)),
    ("storage.example.com:3261", ("storage.example.com", 3261)),
    ("[2001:db8::1]:3260", ("2001:db8::1", 3260)),
    ("[::1]", ("::1", 3260)),
    ("2001:db8::1", ("2001:db8::1", 3260)),
    (" 10.0.0.1:860 ", ("10.0.0.1", 860)),
])
def test_parse_portal(text, expected):
    assert portals.parse_portal(text) == expected


@pytest.mark.parametrize("text", [
    "", "   ", None, 3260, "host:port", "host:0", "host:70000", ":3260",
    "[::1", "[::1]x", "fe80::1:zz:1", "[]:3260",
])
def test_parse_portal_rejects(text):
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        portals.parse_portal(text)
    assert err.value.exit_code == 2


@pytest.mark.parametrize(("host", "port", "text"), [
    ("192.0.2.1", 3260, "192.0.2.1:3260"),
    ("::1", 3260, "[::1]:3260"),
    ("a.example", 1, "a.example:1"),
])
def test_format_portal_round_trips(host, port, text):
    assert portals.format_portal(host, port) == text
    assert portals.parse_portal(text) == (host, port)


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    yield sock.getsockname()[1]
    sock.close()


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_answers(listener):
    assert portals.answers("127.0.0.1", listener, 1.0)
    assert not portals.answers("127.0.0.1", _closed_port(), 1.0)


def test_first_answering_skips_dead_portals(listener):
    dead = _closed_port()
    assert portals.first_answering([("127.0.0.1", dead), ("127.0.0.1", listener)], 1.0) == 1
    assert portals.first_answering([("127.0.0.1", listener), ("127.0.0.1", dead)], 1.0) == 0
    assert portals.first_answering([("127.0.0.1", dead)], 1.0) is None
    assert portals.first_answering([("127.0.0.1", dead), ("127.0.0.1", dead)], 1.0) is None
