"""The XML answers of the simulated ISE, in the shapes the public driver parsed."""

from xml.etree import ElementTree as ET

from ise_sim.common import CREATING, DELETING, OPERATIONAL, PREPARED, is_iqn
from ise_sim.state import Array

# status value/string/detail of a volume: value 0 means ready
STATUS = {
    OPERATIONAL: ("0", "Operational", "None"),
    CREATING: ("1", "Creating", "Creating"),
    PREPARED: ("2", "Prepared", "PREPARED"),
    DELETING: ("3", "Deleting", "Deleting"),
}


def _sub(parent, tag: str, text=None, **attrs):
    node = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        node.text = str(text)
    return node


def _status(parent, value: str, string: str, detail: str) -> None:
    status = _sub(parent, "status", value=value, string=string)
    _sub(_sub(status, "details"), "detail", detail)


def tostring(root) -> bytes:
    return b"<?xml version='1.0' encoding='UTF-8'?>\n" + ET.tostring(root)


def error(message: str) -> bytes:
    root = ET.Element("error")
    root.text = message
    return tostring(root)


def query(array: Array, controllers: list[str]) -> bytes:
    root = ET.Element("array")
    _sub(root, "globalid", array.gid)
    caps = _sub(root, "capabilities")
    for code in ("49003", "49004", "49005", "49006", "49007"):
        _sub(caps, "capability", value=code)
    ctrls = _sub(root, "controllers")
    for rank, address in zip(("1", "0"), controllers, strict=False):
        ctrl = _sub(ctrls, "controller")
        _sub(ctrl, "ipaddress", address)
        _sub(ctrl, "rank", value=rank)
    return tostring(root)


def ionetworks(array: Array) -> bytes:
    chap = array.chap()
    root = ET.Element("ionetworks")
    chapin = _sub(_sub(root, "chap"), "chapin", value="1" if chap["enabled"] else "0")
    _sub(chapin, "username", chap["username"])
    _sub(chapin, "password", chap["password"])
    return tostring(root)


def controllers(array: Array, iscsi_ip: str) -> bytes:
    root = ET.Element("controllers")
    for index, rank in enumerate(("1", "0")):
        ctrl = _sub(root, "controller")
        _sub(ctrl, "name", f"MRC{index + 1}")
        _sub(ctrl, "rank", value=rank)
        ioport = _sub(_sub(ctrl, "ioports"), "ioport")
        _sub(_sub(ioport, "ipaddresses"), "ipaddress", iscsi_ip)
        endpoint = _sub(ioport, "endpoint")
        _sub(endpoint, "globalid", array.iqn)
        _sub(endpoint, "protocol", "iSCSI")
        fcports = _sub(ctrl, "fcports")
        for wwn in array.wwns[index * 2:index * 2 + 2]:
            _sub(_sub(fcports, "fcport"), "wwn", wwn)
    return tostring(root)


def volumes(array: Array, vols: list[dict], base: str) -> bytes:
    root = ET.Element("volumes")
    for vol in vols:
        node = _sub(root, "volume", self=volume_url(array, vol, base))
        _sub(node, "name", vol["name"])
        _sub(node, "globalid", vol["id"])
        _status(node, *STATUS[vol["status"]])
        _sub(node, "size", vol["size"])
        _sub(node, "pool", vol["pool"])
        _sub(node, "redundancy", vol["redundancy"])
        _sub(node, "type", vol["type"])
        if vol.get("parent"):
            _sub(node, "parent", vol["parent"])
        for key in ("IOPSmin", "IOPSmax", "IOPSburst", "affinity", "alloctype"):
            _sub(node, key, vol.get(key, ""))
    return tostring(root)


def volume_url(array: Array, vol: dict, base: str) -> str:
    return f"{base}/storage/arrays/{array.gid}/volumes/{vol['id']}"


def hosts(array: Array, items: list[dict], base: str) -> bytes:
    root = ET.Element("hosts")
    for host in items:
        node = _sub(root, "host", self=host_url(array, host, base))
        _sub(node, "name", host["name"])
        _sub(node, "globalid", host["id"])
        _sub(node, "type", host["os"])
        eps = _sub(node, "endpoints")
        for endpoint in host["endpoints"]:
            ep = _sub(eps, "endpoint")
            _sub(ep, "globalid", endpoint)
            _sub(ep, "protocol", "iSCSI" if is_iqn(endpoint) else "FC")
    return tostring(root)


def host_url(array: Array, host: dict, base: str) -> str:
    return f"{base}/storage/arrays/{array.gid}/hosts/{host['id']}"


def allocations(array: Array, items: list[dict], base: str) -> bytes:
    root = ET.Element("allocations")
    for alloc in items:
        vol = array.data["volumes"][alloc["volume"]]
        host = array.data["hosts"][alloc["host"]]
        node = _sub(root, "allocation", self=allocation_url(array, alloc, base))
        _sub(node, "globalid", alloc["id"])
        vnode = _sub(node, "volume", self=volume_url(array, vol, base))
        _sub(vnode, "volumename", vol["name"])
        eps = _sub(node, "endpoints")
        for endpoint in host["endpoints"]:
            ep = _sub(eps, "endpoint")
            _sub(ep, "hostname", host["name"])
            _sub(ep, "globalid", endpoint)
        _sub(node, "lun", alloc["lun"])
    return tostring(root)


def allocation_url(array: Array, alloc: dict, base: str) -> str:
    return f"{base}/storage/arrays/{array.gid}/allocations/{alloc['id']}"


def pools(array: Array, pool_ids: list[str], base: str) -> bytes:
    root = ET.Element("pools")
    for pid in pool_ids:
        pool, usage = array.data["pools"][pid], array.pool_usage(pid)
        node = _sub(root, "pool", self=f"{base}/storage/pools/{pid}")
        _sub(node, "name", pool["name"])
        _sub(node, "id", pid)
        _sub(node, "globalid", f"{array.gid}-{pid}")
        _status(node, "0", "Operational", "None")
        for tag, total, by in (("available", usage["free"], usage["free_by"]),
                               ("used", usage["used"], usage["used_by"])):
            part = _sub(node, tag, total=total)
            red = _sub(part, "byredundancy")
            for raid, amount in by.items():
                _sub(red, f"raid-{raid}", amount)
        medium = _sub(_sub(node, "media"), "medium")
        _sub(medium, "health", 100)
        _sub(medium, "tier", value="1", string="Hybrid")
        for cap in ("IOPSmincap", "IOPSmaxcap", "IOPSburstcap"):
            _sub(node, cap, 100000)
        vols = _sub(node, "volumes")
        for vol in array.data["volumes"].values():
            if vol["pool"] == pid:
                vnode = _sub(vols, "volume", self=volume_url(array, vol, base))
                _sub(vnode, "name", vol["name"])
                _sub(vnode, "globalid", vol["id"])
    return tostring(root)
