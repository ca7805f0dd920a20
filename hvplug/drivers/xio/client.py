"""The ISE REST client: transport, retries and XML, nothing volume-specific.

::

    client = ISEClient(backend_conf("ise1"))
    client.array.globalid               # from GET /query
    resp = client.get(client.array_path("volumes"), name="vol1")
    resp.status, resp.root, resp.location

Every request has a timeout.  A connection failure (refused, reset,
timed out) or an HTTP 5xx answer is retried ``ise_connection_retries``
times ``ise_retry_interval`` apart on the active controller, then on the
other one; a 400 saying the object is "Not in a valid state" is retried
``ise_completion_retries`` times.  A POST is retried only after asking the
caller's ``recheck`` whether the first attempt took effect, so a retry never
creates an object twice.

An object's ``self`` URL (or a ``Content-Location``) is followed by its
path on whichever controller is answering, so an object found through the
primary is still reachable after a fail-over to the secondary.
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlencode, urlsplit

import requests
from lxml import etree

from hvplug import exception
from hvplug.utils import portals

LOG = logging.getLogger(__name__)

Params = dict | Sequence[tuple[str, str]] | None

_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
_HEADERS = {"Content-Type": "application/xml; charset=utf-8"}
CAP_CLONES = "49006"


@dataclasses.dataclass
class ISEResponse:
    status: int
    root: "etree._Element | None"
    location: str | None = None
    text: str = ""


@dataclasses.dataclass
class ArrayInfo:
    """What ``GET /query`` says about the array."""

    globalid: str
    capabilities: set[str]
    controllers: list[str]  # management addresses, primary first


class _Retriable(Exception):
    """One attempt failed in a way another attempt may not."""


def parse_xml(content: bytes) -> "etree._Element | None":
    if not content or not content.strip():
        return None
    try:
        return etree.fromstring(content, _XML_PARSER)
    except etree.XMLSyntaxError:
        return None


def text(elem, path: str, default: str = "") -> str:
    """Text of the first ``path`` under ``elem``, stripped."""
    found = elem.find(path) if elem is not None else None
    return (found.text or "").strip() if found is not None else default


class ISEClient:
    """Requests to one ISE; ``conf`` is a backend's options."""

    def __init__(self, conf, session: requests.Session | None = None, sleep=time.sleep):
        if not conf.san_ip:
            raise exception.ISEConfigError(backend=getattr(conf, "backend_name", "?"),
                                           reason="san_ip is not set")
        self.conf = conf
        self.sleep = sleep
        self.scheme = "https" if conf.driver_use_ssl else "http"
        self.port = conf.san_api_port or (443 if conf.driver_use_ssl else 80)
        self.controllers = [conf.san_ip]
        self.session = session or requests.Session()
        self.session.auth = (conf.san_login or "", conf.san_password or "")
        self.session.headers.update(_HEADERS)
        self.session.verify = conf.driver_ssl_cert_path or conf.driver_ssl_cert_verify
        self._array: ArrayInfo | None = None

    # -- discovery -----------------------------------------------------------
    @property
    def array(self) -> ArrayInfo:
        if self._array is None:
            self._array = self._query()
        return self._array

    def _query(self) -> ArrayInfo:
        root = self.get("/query").root
        if root is None or root.find(".//globalid") is None:
            raise exception.ISEUnsupported(reason="GET /query gave no <globalid>")
        caps = {c.get("value", "").strip() for c in root.iter("capability")}
        controllers = sorted(root.iter("controller"),
                             key=lambda c: _rank(c), reverse=True)
        addresses = [text(c, "ipaddress") for c in controllers if text(c, "ipaddress")]
        info = ArrayInfo(text(root, ".//globalid"), caps, addresses)
        if CAP_CLONES not in caps:
            raise exception.ISEUnsupported(
                reason="its firmware lacks clone support (capability 49006)")
        self.controllers = _dedupe([self.controllers[0], *addresses])
        return info

    def array_path(self, *parts: str) -> str:
        return "/".join(["/storage/arrays", self.array.globalid, *parts])

    # -- verbs ---------------------------------------------------------------
    def get(self, url: str, **params) -> ISEResponse:
        return self.request("GET", url, params)

    def put(self, url: str, **params) -> ISEResponse:
        return self.request("PUT", url, params)

    def delete(self, url: str) -> ISEResponse:
        return self.request("DELETE", url)

    def post(self, url: str, params: Params, recheck: Callable | None = None) -> ISEResponse:
        """POST ``params``; before a retry, ``recheck()`` returning a response
        means the earlier attempt took effect and that response is used."""
        return self.request("POST", url, params, recheck=recheck)

    def request(self, method: str, url: str, params: Params = None,
                recheck: Callable | None = None) -> ISEResponse:
        path = _path_of(url)
        for attempt in range(1, self.conf.ise_completion_retries + 1):
            resp = self._request_any_controller(method, path, params, recheck)
            if not _not_valid_state(resp):
                return resp
            LOG.debug("%s %s: not in a valid state yet (attempt %d)", method, path, attempt)
            self.sleep(self.conf.ise_retry_interval)
        raise exception.ISETimeout(action=f"accept {method} {path}",
                                   tries=self.conf.ise_completion_retries,
                                   state="the object stayed 'Not in a valid state'")

    def _request_any_controller(self, method, path, params, recheck) -> ISEResponse:
        reason, sent = "", False
        for controller in list(self.controllers):
            for attempt in range(self.conf.ise_connection_retries):
                if sent and recheck is not None:
                    earlier = recheck()
                    if earlier is not None:
                        return earlier
                try:
                    resp = self._send(controller, method, path, params)
                except _Retriable as exc:
                    reason, sent = str(exc), True
                    LOG.warning("ISE %s: %s %s failed (%s); attempt %d of %d",
                                controller, method, path, reason, attempt + 1,
                                self.conf.ise_connection_retries)
                    self.sleep(self.conf.ise_retry_interval)
                    continue
                self._prefer(controller)
                return resp
        raise exception.ISEConnectionFailed(
            reason=reason, tries=self.conf.ise_connection_retries,
            controllers=", ".join(self.controllers))

    def _send(self, controller: str, method: str, path: str, params: Params) -> ISEResponse:
        url = f"{self.scheme}://{portals.format_portal(controller, self.port)}{path}"
        kwargs = {"timeout": self.conf.ise_request_timeout}
        if method == "POST":
            kwargs["data"] = urlencode(params or {}, doseq=True)
        elif params:
            kwargs["params"] = params
        try:
            raw = self.session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise _Retriable(f"{type(exc).__name__}: {_short(exc)}") from None
        if raw.status_code >= 500:
            raise _Retriable(f"HTTP {raw.status_code} {raw.reason}")
        LOG.debug("ISE %s %s -> %s", method, path, raw.status_code)
        resp = ISEResponse(raw.status_code, parse_xml(raw.content),
                           raw.headers.get("Content-Location"), raw.text)
        if resp.status == 401:
            raise exception.ISEAuthFailed(method=method, path=path, status=401,
                                          reason="", login=self.conf.san_login)
        return resp

    def _prefer(self, controller: str) -> None:
        """Keep using the controller that answered first."""
        if self.controllers[0] != controller:
            LOG.warning("ISE: using controller %s from now on", controller)
            self.controllers.remove(controller)
            self.controllers.insert(0, controller)

    def wait(self, check: Callable[[], bool], action: str, state: Callable[[], str]) -> None:
        """Poll ``check`` until true, at most ``ise_completion_retries`` times."""
        for _ in range(self.conf.ise_completion_retries):
            if check():
                return
            self.sleep(self.conf.ise_retry_interval)
        raise exception.ISETimeout(action=action, tries=self.conf.ise_completion_retries,
                                   state=state())


def failed(resp: ISEResponse, method: str, url: str) -> exception.ISERequestFailed:
    """The error for an answer the caller did not expect."""
    reason = " ".join(resp.root.itertext()).strip() if resp.root is not None else resp.text
    return exception.ISERequestFailed(method=method, path=_path_of(url),
                                      status=resp.status, reason=reason[:300])


def _rank(controller) -> int:
    rank = controller.find("rank")
    try:
        return int(rank.get("value", "0")) if rank is not None else 0
    except ValueError:
        return 0


def _not_valid_state(resp: ISEResponse) -> bool:
    return resp.status == 400 and "not in a valid state" in resp.text.lower()


def _path_of(url: str) -> str:
    """An object's ``self`` URL or a path → path and query on the controller."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _short(exc: Exception) -> str:
    return str(exc).split(": ")[-1][:200]
