"""iSCSI portal strings: parse, format, and find one that answers.

``socket`` and ``concurrent.futures`` are imported by the probes that use
them: every attach and detach parses portals, few probe them here.
"""

import re

from hvplug import exception
from hvplug.utils import inputs

DEFAULT_ISCSI_PORT = 3260
# libvirt's basictypes.rng: ipv4Addr, ipv6Addr and dnsName, as a <host name=...> takes them.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
_IPV4_TEXT = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_IPV4 = re.compile(_IPV4_TEXT)
_H = "[0-9A-Fa-f]{1,4}"
_IPV6_TEXT = "|".join((
    rf"(?:{_H}:){{7}}{_H}", rf"(?:{_H}:){{6}}:{_H}", rf"(?:{_H}:){{5}}:(?:{_H}:)?{_H}",
    rf"(?:{_H}:){{4}}:(?:{_H}:){{0,2}}{_H}", rf"(?:{_H}:){{3}}:(?:{_H}:){{0,3}}{_H}",
    rf"(?:{_H}:){{2}}:(?:{_H}:){{0,4}}{_H}", rf"(?:{_H}:){{6}}{_IPV4_TEXT}",
    rf"(?:{_H}:){{0,5}}:{_IPV4_TEXT}", rf"::(?:{_H}:){{0,5}}{_IPV4_TEXT}",
    rf"{_H}::(?:{_H}:){{0,5}}{_H}", rf"::(?:{_H}:){{0,6}}{_H}", rf"(?:{_H}:){{1,7}}:", "::"))
_DNS_NAME = re.compile(r"[a-zA-Z0-9.-]+")
_PORT = re.compile(r"[0-9]{1,5}")


def _is_ipv6(text: str) -> bool:
    """Whether ``text`` is an IPv6 address.  The pattern is compiled on first
    use (re caches it): compiling it took 1.5 ms of every start, and an IPv4
    or DNS-name portal never needs it."""
    return re.fullmatch(_IPV6_TEXT, text) is not None


def parse_portal(portal: str, default_port: int = DEFAULT_ISCSI_PORT,
                 key: str = "portal") -> tuple[str, int]:
    """Split ``"host[:port]"`` into ``(host, port)``, checked.

    IPv6 addresses come bracketed (``"[2001:db8::1]:3260"``); a bare IPv6
    address without a port is accepted too.  The host must be what libvirt's
    schema takes for a ``<host name=...>``: an IPv4 or IPv6 address or a DNS
    name (letters, digits, '.', '-'); the port 1-65535.  Raises
    InvalidConnectionInfo naming ``key``.

    >>> parse_portal("[::1]:3261")
    ('::1', 3261)
    """
    if not isinstance(portal, str) or not portal.strip():
        raise exception.InvalidConnectionInfo(
            reason=f"{key} {inputs.shown(portal)} is not a 'host:port' string")
    text = portal.strip()
    host, port = text, str(default_port)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")) or not _is_ipv6(host):
            raise exception.InvalidConnectionInfo(
                reason=f"{key} {inputs.shown(portal)}: an IPv6 address is written "
                "'[addr]:port'")
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1 and not _is_ipv6(text):
        raise exception.InvalidConnectionInfo(
            reason=f"{key} {inputs.shown(portal)} is not 'host:port' (bracket IPv6 "
            "addresses)")
    if not (_IPV4.fullmatch(host) or (_DNS_NAME.fullmatch(host) and len(host) <= 253)
            or _is_ipv6(host)):
        raise exception.InvalidConnectionInfo(
            reason=f"{key} {inputs.shown(portal)}: the host must be an IP address or a "
            "DNS name (letters, digits, '.' and '-')")
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise exception.InvalidConnectionInfo(
            reason=f"{key} {inputs.shown(portal)} needs a port from 1 to 65535")
    return host, int(port)


def format_portal(host: str, port: int) -> str:
    """``("::1", 3260)`` → ``"[::1]:3260"``; IPv4 and names stay bare."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def answers(host: str, port: int, timeout: float) -> bool:
    """True when ``host:port`` accepts a TCP connection within ``timeout`` s."""
    import socket
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def first_answering(portals: list[tuple[str, int]], timeout: float) -> int | None:
    """Index of the first portal, in the given order, that answers.

    Up to 16 portals are probed at once, so a dead first portal costs at
    most ``timeout`` seconds in total, not ``timeout`` per portal.
    """
    if len(portals) == 1:
        return 0 if answers(*portals[0], timeout) else None
    import concurrent.futures
    pool = concurrent.futures.ThreadPoolExecutor(min(len(portals), 16))
    try:
        futures = [pool.submit(answers, host, port, timeout) for host, port in portals]
        for index, future in enumerate(futures):
            if future.result():
                return index
        return None
    finally:  # probes not yet started are dropped; running ones end within timeout
        pool.shutdown(wait=False, cancel_futures=True)
