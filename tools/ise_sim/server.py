"""The HTTP side of the simulated ISE: routing, Basic auth, fault switches.

``Simulator`` owns the array and one ``ThreadingHTTPServer`` per
controller (the primary, rank 1, and optionally a secondary, rank 0); both
serve the same array.  ``/_sim/...`` is the administration API tests use
(see doc/ise-simulator.md).
"""

import base64
import hmac
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from ise_sim import responses as rx
from ise_sim.common import NOT_VALID, SimError
from ise_sim.state import Array

LOG = logging.getLogger(__name__)
FAULTS = ("http500", "slow", "invalid_state", "primary_down")


class Faults:
    """Switches flipped through ``POST /_sim/faults``; counters count down."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values = dict.fromkeys(FAULTS, 0)

    def set(self, params: dict) -> dict:
        with self.lock:
            for key, value in params.items():
                if key not in FAULTS:
                    raise SimError(400, f"Unknown fault {key}; known: {', '.join(FAULTS)}")
                try:
                    self.values[key] = float(value) if key == "slow" else int(value)
                except (TypeError, ValueError):
                    raise SimError(400, f"Fault {key} needs a number") from None
            return dict(self.values)

    def take(self, key: str):
        """The switch's value, counting a counter down (``slow`` is one-shot)."""
        with self.lock:
            value = self.values[key]
            if value and key != "primary_down":
                self.values[key] = 0 if key == "slow" else value - 1
            return value


class Simulator:
    """The array plus its controllers' listeners."""

    def __init__(self, array: Array, login: str, password: str,
                 listen: tuple[str, int], secondary: tuple[str, int] | None = None,
                 iscsi_ip: str = "127.0.0.1"):
        self.array = array
        self.faults = Faults()
        self.login, self.password = login, password
        self.iscsi_ip = iscsi_ip
        self.servers = [SimHTTPServer(listen, self, primary=True)]
        if secondary:
            self.servers.append(SimHTTPServer(secondary, self, primary=False))
        self._threads: list[threading.Thread] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.server_address[:2] for s in self.servers]

    def controller_ips(self) -> list[str]:
        ips = [host for host, _ in self.addresses]
        return ips if len(ips) == 2 else ips * 2

    def start(self) -> None:
        self.array.restore_exports()
        for server in self.servers:
            thread = threading.Thread(target=server.serve_forever, daemon=True,
                                      kwargs={"poll_interval": 0.1})
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.array.shutdown()

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:], validate=True).decode()
        except ValueError:
            return False
        return hmac.compare_digest(given, f"{self.login}:{self.password}")


class SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, sim: Simulator, primary: bool):
        self.sim = sim
        self.primary = primary
        super().__init__(address, Handler)


_ROUTES = []


def route(method: str, pattern: str):
    def register(func):
        _ROUTES.append((method, re.compile(f"^{pattern}$"), func))
        return func
    return register


class Handler(BaseHTTPRequestHandler):
    server: SimHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        LOG.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing --------------------------------------------------------------
    @property
    def sim(self) -> Simulator:
        return self.server.sim

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host') or f'{host}:{port}'}"

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        admin = url.path.startswith("/_sim/")
        if self.server.primary and not admin and self.sim.faults.take("primary_down"):
            self.close_connection = True  # drop it unanswered, as a dead controller
            return
        if not self.sim.authorized(self.headers.get("Authorization")):
            return self._send(401, rx.error("Authentication required"),
                              {"WWW-Authenticate": 'Basic realm="ISE"'})
        if not admin and self.sim.faults.take("http500"):
            return self._send(500, rx.error("Simulated internal error"))
        slow = 0 if admin else self.sim.faults.take("slow")
        params = _params(url.query, body, self.headers.get("Content-Type", ""))
        status, payload, headers = self._handle(method, url.path, params, body)
        if slow:
            time.sleep(slow)  # the work is done; only the answer is late
        self._send(status, payload, headers)

    def _handle(self, method: str, path: str, params: dict, body: bytes):
        for verb, pattern, func in _ROUTES:
            match = pattern.match(path)
            if verb == method and match:
                try:
                    return func(self, params, **match.groupdict())
                except SimError as exc:
                    return exc.status, rx.error(exc.message), {}
                except Exception as exc:  # e.g. tgtd refused: answer, do not hang up
                    LOG.exception("%s %s failed", method, path)
                    return 500, rx.error(f"Internal error: {exc}"), {}
        return 404, rx.error(f"No resource {method} {path}"), {}

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        ctype = "application/json" if payload[:1] in (b"{", b"[") else "application/xml"
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _array(self, gid: str) -> Array:
        array = self.sim.array
        if gid != array.gid:
            raise SimError(404, f"No array {gid}")
        return array


def _params(query: str, body: bytes, content_type: str) -> dict:
    """``k=v&k=v`` from the query string and the body; repeated keys -> list
    under ``key`` for ``endpoint``, last value otherwise.  A JSON body (the
    admin API) is accepted too."""
    text = body.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        return {k: str(v) for k, v in json.loads(text).items()}
    params: dict = {}
    for key, value in parse_qsl(query, keep_blank_values=True) + \
            parse_qsl(text, keep_blank_values=True):
        if key == "endpoint":
            params.setdefault(key, []).append(value)
        else:
            params[key] = value
    return params


GID = r"/storage/arrays/(?P<gid>[^/]+)"


@route("GET", "/query")
def get_query(h: Handler, p: dict):
    return 200, rx.query(h.sim.array, h.sim.controller_ips()), {}


@route("GET", GID + "/ionetworks")
def get_ionetworks(h: Handler, p: dict, gid: str):
    return 200, rx.ionetworks(h._array(gid)), {}


@route("GET", GID + "/controllers")
def get_controllers(h: Handler, p: dict, gid: str):
    return 200, rx.controllers(h._array(gid), h.sim.iscsi_ip), {}


# -- volumes -------------------------------------------------------------------
@route("GET", GID + "/volumes")
def list_volumes(h: Handler, p: dict, gid: str):
    array = h._array(gid)
    with array.lock:
        vols = list(array.data["volumes"].values())
        if "name" in p:
            vols = [v for v in vols if v["name"] == p["name"]]
            if not vols:
                raise SimError(404, f"Volume {p['name']} not found")
        return 200, rx.volumes(array, vols, h.base), {}


@route("POST", GID + "/volumes")
def create_volume(h: Handler, p: dict, gid: str):
    array = h._array(gid)
    vol = array.create_volume(p)
    url = rx.volume_url(array, vol, h.base)
    return 201, rx.volumes(array, [vol], h.base), {"Content-Location": url}


@route("GET", GID + "/volumes/(?P<vid>[^/]+)")
def get_volume(h: Handler, p: dict, gid: str, vid: str):
    array = h._array(gid)
    with array.lock:
        return 200, rx.volumes(array, [array.volume(vid)], h.base), {}


@route("POST", GID + "/volumes/(?P<vid>[^/]+)")
def prepare_copy(h: Handler, p: dict, gid: str, vid: str):
    array = h._array(gid)
    if h.sim.faults.take("invalid_state"):
        raise SimError(400, f"Source volume is {NOT_VALID}")
    vol = array.prepare(vid, p)
    url = rx.volume_url(array, vol, h.base)
    return 202, rx.volumes(array, [vol], h.base), {"Content-Location": url}


@route("PUT", GID + "/volumes/(?P<vid>[^/]+)")
def modify_volume(h: Handler, p: dict, gid: str, vid: str):
    array = h._array(gid)
    vol = array.modify(vid, p)
    url = rx.volume_url(array, vol, h.base)
    return 201, rx.volumes(array, [vol], h.base), {"Content-Location": url}


@route("DELETE", GID + "/volumes/(?P<vid>[^/]+)")
def delete_volume(h: Handler, p: dict, gid: str, vid: str):
    h._array(gid).delete_volume(vid)
    return 204, b"", {}


# -- hosts ---------------------------------------------------------------------
@route("GET", GID + "/hosts")
def list_hosts(h: Handler, p: dict, gid: str):
    array = h._array(gid)
    with array.lock:
        items = list(array.data["hosts"].values())
        if p.get("name"):
            items = [x for x in items if x["name"].upper() == p["name"].upper()]
        return 200, rx.hosts(array, items, h.base), {}


@route("POST", GID + "/hosts")
def create_host(h: Handler, p: dict, gid: str):
    array = h._array(gid)
    host = array.create_host(p.get("name", ""), p.get("endpoint", []), p.get("os", ""))
    url = rx.host_url(array, host, h.base)
    return 201, rx.hosts(array, [host], h.base), {"Content-Location": url}


@route("GET", GID + "/hosts/(?P<hid>[^/]+)")
def get_host(h: Handler, p: dict, gid: str, hid: str):
    array = h._array(gid)
    with array.lock:
        return 200, rx.hosts(array, [array.host(hid)], h.base), {}


@route("PUT", GID + "/hosts/(?P<hid>[^/]+)")
def modify_host(h: Handler, p: dict, gid: str, hid: str):
    array = h._array(gid)
    return 201, rx.hosts(array, [array.modify_host(hid, p)], h.base), {}


@route("DELETE", GID + "/hosts/(?P<hid>[^/]+)")
def delete_host(h: Handler, p: dict, gid: str, hid: str):
    h._array(gid).delete_host(hid)
    return 204, b"", {}


# -- allocations ---------------------------------------------------------------
@route("GET", GID + "/allocations")
def list_allocations(h: Handler, p: dict, gid: str):
    array = h._array(gid)
    with array.lock:
        items = array.find_allocations(p.get("name", ""), p.get("hostname", ""))
        return 200, rx.allocations(array, items, h.base), {}


@route("POST", GID + "/allocations")
def create_allocation(h: Handler, p: dict, gid: str):
    array = h._array(gid)
    alloc, created = array.allocate(p)
    with array.lock:
        headers = {"Content-Location": rx.allocation_url(array, alloc, h.base)}
        return (201 if created else 409), rx.allocations(array, [alloc], h.base), headers


@route("GET", GID + "/allocations/(?P<aid>[^/]+)")
def get_allocation(h: Handler, p: dict, gid: str, aid: str):
    array = h._array(gid)
    with array.lock:
        return 200, rx.allocations(array, [array.allocation(aid)], h.base), {}


@route("DELETE", GID + "/allocations/(?P<aid>[^/]+)")
def delete_allocation(h: Handler, p: dict, gid: str, aid: str):
    h._array(gid).deallocate(aid)
    return 204, b"", {}


# -- pools ---------------------------------------------------------------------
@route("GET", "/storage/pools")
def list_pools(h: Handler, p: dict):
    array = h.sim.array
    with array.lock:
        return 200, rx.pools(array, list(array.data["pools"]), h.base), {}


@route("GET", "/storage/pools/(?P<pid>[^/]+)")
def get_pool(h: Handler, p: dict, pid: str):
    array = h.sim.array
    with array.lock:
        if pid not in array.data["pools"]:
            raise SimError(404, f"Pool {pid} not found")
        return 200, rx.pools(array, [pid], h.base), {}


# -- administration ------------------------------------------------------------
@route("GET", "/_sim/faults")
def get_faults(h: Handler, p: dict):
    return 200, json.dumps(h.sim.faults.set({})).encode(), {}


@route("POST", "/_sim/faults")
def set_faults(h: Handler, p: dict):
    return 200, json.dumps(h.sim.faults.set(p)).encode(), {}


@route("GET", "/_sim/state")
def get_state(h: Handler, p: dict):
    array = h.sim.array
    with array.lock:
        data = {k: v for k, v in array.data.items() if k != "chap"}
        data["iqn"] = array.iqn
        data["pool_usage"] = {pid: array.pool_usage(pid) for pid in array.data["pools"]}
        return 200, json.dumps(data, sort_keys=True).encode(), {}


@route("POST", "/_sim/reset")
def reset(h: Handler, p: dict):
    h.sim.faults.set(dict.fromkeys(FAULTS, 0))
    h.sim.array.reset()
    return 200, b"{}", {}


@route("POST", "/_sim/chap")
def set_chap(h: Handler, p: dict):
    enabled = p.get("enabled", "1").lower() in ("1", "true", "yes")
    h.sim.array.set_chap(enabled, p.get("username"), p.get("password"))
    return 200, b"{}", {}
