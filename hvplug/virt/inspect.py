"""What volumes a domain has, and whether their iSCSI plumbing still works.

A volume below a disk's top (the backing store of an external snapshot's
overlay, the mirror of a block copy) is listed and verified too, with its
layer named.
"""

from lxml import etree

from hvplug.conf import CONF
from hvplug.utils import portals
from hvplug.virt import guest_disks


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
    """Checks of one iSCSI network disk layer: its secret exists, its portal answers."""
    checks = [check for check in [_secret_check(host, disk)] if check]
    portal = _portal(disk)
    if portal:
        name, port = portals.parse_portal(portal)
        ok = portals.answers(name, port, CONF.libvirt.iscsi_portal_probe_timeout)
        checks.append(_check("portal", ok, f"portal {portal} "
                             + ("answers" if ok else "does not answer")))
    return checks


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
