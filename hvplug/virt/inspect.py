"""What volumes a domain has, and whether their iSCSI plumbing still works."""

from hvplug.conf import CONF
from hvplug.utils import portals
from hvplug.virt import guest_disks


def _portal(disk) -> str | None:
    if not disk.source_hosts:
        return None
    host, port = disk.source_hosts[0]
    return portals.format_portal(host, int(port or portals.DEFAULT_ISCSI_PORT))


def volume_rows(host, domain: str) -> list[dict]:
    """One row per network or block disk of ``domain``."""
    view = guest_disks.DomainView(host, domain)
    return [
        {"dev": disk.target_dev, "bus": disk.target_bus,
         "protocol": disk.source_protocol,
         "source": disk.source_name if disk.source_type == "network" else disk.source_path,
         "portal": _portal(disk), "secret_uuid": disk.auth_secret_uuid}
        for disk in guest_disks.disks(view.current_xml)
        if disk.source_type in ("network", "block")
    ]


def _check(name: str, ok: bool, detail: str) -> dict:
    return {"check": name, "ok": ok, "detail": detail}


def verify_disk(host, disk) -> list[dict]:
    """Checks of one iSCSI network disk: its secret exists, its portal answers."""
    checks = []
    if disk.auth_secret_uuid:
        exists = host.secret_exists(disk.auth_secret_uuid)
        checks.append(_check("secret", exists, f"secret {disk.auth_secret_uuid} "
                             + ("exists" if exists else "is missing")))
    portal = _portal(disk)
    if portal:
        name, port = portals.parse_portal(portal)
        ok = portals.answers(name, port, CONF.libvirt.iscsi_portal_probe_timeout)
        checks.append(_check("portal", ok, f"portal {portal} "
                             + ("answers" if ok else "does not answer")))
    return checks


def verify_volumes(host, domain: str) -> list[dict]:
    """For each iSCSI disk of ``domain``: ``{"dev", "ok", "checks": [...]}``."""
    view = guest_disks.DomainView(host, domain)
    results = []
    for disk in guest_disks.disks(view.current_xml):
        if disk.source_type == "network" and disk.source_protocol == "iscsi":
            checks = verify_disk(host, disk)
            results.append({"dev": disk.target_dev, "source": disk.source_name,
                            "ok": all(c["ok"] for c in checks), "checks": checks})
    return results
