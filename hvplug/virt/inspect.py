"""What volumes a domain has, and whether their iSCSI plumbing still works.

A volume below a disk's top (the backing store of an external snapshot's
overlay, the mirror of a block copy) is listed and verified too, with its
layer named.
"""

from lxml import etree

from hvplug import exception
from hvplug.conf import CONF
from hvplug.initiator import login_probe
from hvplug.initiator.login_probe import Outcome
from hvplug.utils import portals
from hvplug.virt import guest_disks
from hvplug.virt.volume import net


def _portal(disk) -> str | None:
    if not disk.source_hosts:
        return None
    host, port = disk.source_hosts[0]
    return portals.format_portal(host, int(port or portals.DEFAULT_ISCSI_PORT))


def _layers(xml: str):
    """``(top disk, kind, depth, layer)`` of every disk layer in ``xml``."""
    root = etree.fromstring(xml.encode())
    for element in root.iterfind("./devices/disk"):
        top = None
        for kind, depth, layer in guest_disks.layers(element):
            top = top or layer
            yield top, kind, depth, layer


def _layer_name(kind: str, depth: int) -> str:
    return {"source": "source", "mirror": "mirror"}.get(kind, f"backing {depth}")


def volume_rows(host, domain: str) -> list[dict]:
    """One row per network or block disk layer of ``domain``."""
    view = guest_disks.DomainView(host, domain)
    return [
        {"dev": top.target_dev, "bus": top.target_bus, "layer": _layer_name(kind, depth),
         "protocol": layer.source_protocol,
         "source": layer.source_name if layer.source_type == "network" else layer.source_path,
         "portal": _portal(layer), "secret_uuid": layer.auth_secret_uuid,
         "secret_usage": layer.auth_secret_usage}
        for top, kind, depth, layer in _layers(view.current_xml)
        if layer.source_type in ("network", "block")
    ]


def _check(name: str, ok: bool, detail: str) -> dict:
    return {"check": name, "ok": ok, "detail": detail}


def _secret_check(host, disk) -> dict | None:
    if disk.auth_secret_uuid:
        exists = host.secret_exists(disk.auth_secret_uuid)
        what = f"secret {disk.auth_secret_uuid}"
    elif disk.auth_secret_usage:
        usage_type = disk.auth_secret_type or "iscsi"
        exists = host.find_secret(usage_type, disk.auth_secret_usage) is not None
        what = f"secret with usage {usage_type} '{disk.auth_secret_usage}'"
    else:
        return None
    return _check("secret", exists, f"{what} " + ("exists" if exists else
                                                  "is missing (see hvplug reconcile)"))


def verify_disk(host, disk) -> list[dict]:
    """Checks of one iSCSI network disk layer, in order, each ``{"check", "ok", "detail"}``.

    - ``secret``: the secret its ``<auth>`` references exists;
    - ``portal``: its portal accepts a TCP connection;
    - ``target``: the target answers an iSCSI login from the disk's
      initiator IQN (``login_probe``, no password): it admits, or asks for
      CHAP and the disk has ``<auth>``; "target not found", other refusals
      and silence fail;
    - ``lun``: for a target that admits without authentication, REPORT LUNS
      lists the disk's LUN.  Behind CHAP the LUN is not checked: libvirt
      keeps the password private, and the probe never handles one.

    With ``[libvirt] iscsi_login_probe_timeout`` 0, only ``secret`` and a
    TCP ``portal`` check.
    """
    checks = [check for check in [_secret_check(host, disk)] if check]
    portal = _portal(disk)
    if not portal:
        return checks
    name, port = portals.parse_portal(portal)
    iqn, _, lun = (disk.source_name or "").rpartition("/")
    login_timeout = CONF.libvirt.iscsi_login_probe_timeout
    if not login_timeout or not iqn or not lun.isdigit():
        return [*checks, _tcp_check(portal, name, port)]
    try:
        initiator = disk.source_initiator_iqn or net.initiator_name()
    except exception.HvplugError as exc:
        return [*checks, _tcp_check(portal, name, port),
                _check("target", False, f"target {iqn} not checked: {exc}")]
    result = login_probe.probe(name, port, iqn, initiator, report_luns=True,
                               connect_timeout=CONF.libvirt.iscsi_portal_probe_timeout,
                               login_timeout=login_timeout)
    reached = result.outcome is not Outcome.UNREACHABLE
    checks.append(_check("portal", reached, f"portal {portal} " + (
        "answers" if reached else f"does not answer ({result.detail})")))
    if reached:
        checks.append(_target_check(result, disk, initiator, int(lun)))
        if result.outcome is Outcome.ADMITTED:
            checks.append(_lun_check(result, int(lun)))
    return checks


def _tcp_check(portal: str, name: str, port: int) -> dict:
    """The ``portal`` check when there is no login probe: a TCP connection only."""
    ok = portals.answers(name, port, CONF.libvirt.iscsi_portal_probe_timeout)
    return _check("portal", ok, f"portal {portal} " + ("answers" if ok else "does not answer"))


# What each answer to the login probe means, worded with the result's fields.
_TARGET_VERDICTS = {
    Outcome.ADMITTED: (True, "{target} admits initiator {initiator} without authentication"),
    Outcome.REDIRECTED: (True, "{target} answers with a redirect ({detail}); LUN {lun} not "
                               "checked"),
    Outcome.NOT_FOUND: (False, "{target} answered 'Target not found' ({detail}) to initiator "
                               "{initiator}: it is not exported at {portal}, or its ACL does "
                               "not admit this initiator"),
    Outcome.AUTHORIZATION_FAILED: (False, "{target} refused initiator {initiator} ({detail}): "
                                          "grant this IQN on the target"),
    Outcome.NO_ANSWER: (False, "{target}: portal {portal} accepted TCP but {detail} ([libvirt] "
                               "iscsi_login_probe_timeout)"),
}
# CHAP asked for: whether the disk has <auth> decides
_AUTH_VERDICTS = {
    True: (True, "{target} answers, {method} required; LUN {lun} not checked without the "
                 "password (libvirt keeps it private)"),
    False: (False, "{target} requires {method} authentication, but the disk has no <auth>, "
                   "so QEMU cannot log in"),
}
_REFUSED = (False, "{target} refused the login of initiator {initiator}: {detail}")


def _target_check(result, disk, initiator: str, lun: int) -> dict:
    """What the target's answer to the login probe says about this disk."""
    if result.outcome is Outcome.AUTH_REQUIRED:
        has_auth = bool(disk.auth_username or disk.auth_secret_uuid or disk.auth_secret_usage)
        ok, text = _AUTH_VERDICTS[has_auth]
    else:
        ok, text = _TARGET_VERDICTS.get(result.outcome, _REFUSED)
    return _check("target", ok, text.format(
        target=f"target {result.target}", initiator=initiator, lun=lun,
        detail=result.detail, portal=result.portal, method=result.auth_method or "CHAP"))


def _lun_check(result, lun: int) -> dict:
    if result.luns is None:
        return _check("lun", False, f"LUN {lun} of target {result.target} could not be "
                      f"checked: REPORT LUNS failed ({result.luns_error})")
    if lun in result.luns:
        return _check("lun", True, f"LUN {lun} exists (REPORT LUNS)")
    listed = ", ".join(map(str, result.luns)) or "none"
    return _check("lun", False, f"LUN {lun} is not exported by target {result.target} "
                  f"(REPORT LUNS lists {listed})")


def verify_volumes(host, domain: str) -> list[dict]:
    """For each iSCSI disk layer of ``domain``: ``{"dev", "layer", "ok", "checks"}``."""
    view = guest_disks.DomainView(host, domain)
    results = []
    for top, kind, depth, layer in _layers(view.current_xml):
        if layer.source_type == "network" and layer.source_protocol == "iscsi":
            checks = verify_disk(host, layer)
            results.append({"dev": top.target_dev, "layer": _layer_name(kind, depth),
                            "source": layer.source_name,
                            "ok": all(c["ok"] for c in checks), "checks": checks})
    return results
