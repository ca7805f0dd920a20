"""iSCSI portal strings: parse, format, and find one that answers."""

import concurrent.futures
import ipaddress
import socket

from hvplug import exception

DEFAULT_ISCSI_PORT = 3260


def parse_portal(portal: str, default_port: int = DEFAULT_ISCSI_PORT) -> tuple[str, int]:
    """Split ``"host[:port]"`` into ``(host, port)``.

    IPv6 addresses come bracketed (``"[2001:db8::1]:3260"``); a bare IPv6
    address without a port is accepted too.  Raises InvalidConnectionInfo.

    >>> parse_portal("[::1]:3261")
    ('::1', 3261)
    """
    if not isinstance(portal, str) or not portal.strip():
        raise exception.InvalidConnectionInfo(
            reason=f"portal {portal!r} is not a 'host:port' string")
    text = portal.strip()
    host, port = text, str(default_port)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise exception.InvalidConnectionInfo(
                reason=f"portal {portal!r}: an IPv6 address is written '[addr]:port'")
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1 and not _is_ipv6(text):
        raise exception.InvalidConnectionInfo(
            reason=f"portal {portal!r} is not 'host:port' (bracket IPv6 addresses)")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise exception.InvalidConnectionInfo(
            reason=f"portal {portal!r} needs a host and a port between 1 and 65535")
    return host, int(port)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def format_portal(host: str, port: int) -> str:
    """``("::1", 3260)`` → ``"[::1]:3260"``; IPv4 and names stay bare."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def answers(host: str, port: int, timeout: float) -> bool:
    """True when ``host:port`` accepts a TCP connection within ``timeout`` s."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def first_answering(portals: list[tuple[str, int]], timeout: float) -> int | None:
    """Index of the first portal, in the given order, that answers.

    All portals are probed at once, so a dead first portal costs at most
    ``timeout`` seconds in total, not ``timeout`` per portal.
    """
    if len(portals) == 1:
        return 0 if answers(*portals[0], timeout) else None
    with concurrent.futures.ThreadPoolExecutor(len(portals)) as pool:
        futures = [pool.submit(answers, host, port, timeout) for host, port in portals]
        for index, future in enumerate(futures):
            if future.result():
                return index
    return None
