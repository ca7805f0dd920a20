"""The declared shape of a Cinder-style ``connection_info``, checked once.

Every document hvplug is handed goes through :func:`check` before any
driver reads it, so every violation is one clean
:class:`~hvplug.exception.InvalidConnectionInfo` (exit 2) naming the key and
the rule, and nothing on the host has been touched yet.  The rules are those
of libvirt's schemas for what the value becomes in a guest's XML (a host
name, a CHAP user name, a serial), of the iSCSI RFCs (IQNs, LUNs), and of
QEMU (iotune limits)::

    {"driver_volume_type": "iscsi",          # [a-z0-9_]{1,64}
     "data": {"target_portal": "192.0.2.10:3260",   # IP or DNS name; port 1-65535
              "target_iqn": "iqn.2010-10.org.openstack:volume-42",
              "target_lun": 1,                # 0-16383 (a driver may allow more)
              "auth_method": "CHAP", "auth_username": "u1", "auth_password": "...",
              "qos_specs": {"total_bytes_sec": 1048576}},
     "serial": "42"}                          # [A-Za-z0-9_.+- ]

A key whose value is ``null`` or ``""`` counts as absent.  Keys no shape
declares are left alone (Cinder sends more than any one driver reads).
Each volume driver names its shape in ``data_shape``; the generic flow
checks the outer document with :func:`check_outer`.
"""

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from hvplug import exception
from hvplug.utils import inputs, portals

Check = Callable[[Any, str], Any]

MAX_LUN = 16383  # what Linux, tgt and QEMU's libiscsi address without trouble
MAX_IOTUNE = 10 ** 15  # QEMU's THROTTLE_VALUE_MAX: a larger limit fails the attach
_ERROR = exception.InvalidConnectionInfo

# RFC 3720 3.2.6: an iSCSI name is 'iqn.', 'eui.' or 'naa.' and at most 223
# bytes of letters, digits, '-', '.' and ':' (the ASCII that stringprep keeps).
_IQN = re.compile(r"(?:[iI][qQ][nN]|[eE][uU][iI]|[nN][aA][aA])\.[A-Za-z0-9.:-]+")
_IQN_RULE = ("an iSCSI name: 'iqn.', 'eui.' or 'naa.' followed by letters, digits, "
             "'.', '-' and ':' (RFC 3720)")
# libvirt's genericName: what <auth username=...> may hold.
_GENERIC_NAME = re.compile(r"[a-zA-Z0-9_+-]+")
# libvirt's diskSerial.
_SERIAL = re.compile(r"[A-Za-z0-9_.+\- ]+")
_VOLUME_TYPE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UUID = re.compile(r"[a-fA-F0-9]{32}|[a-fA-F0-9]{8}-(?:[a-fA-F0-9]{4}-){3}[a-fA-F0-9]{12}")
_WWN = re.compile(r"(?:0[xX])?[0-9a-fA-F]{16}")
_ABSOLUTE_PATH = re.compile(r"/.+")

# The Cinder front-end qos_specs keys that become <iotune> elements: for
# bytes and iops, a total or read/write limit (``..._sec``), its burst
# (``..._sec_max``, what Nova passes too) and how long a burst may last in
# seconds (``..._sec_max_length``, which Nova drops), and size_iops_sec.
IOTUNE_DIRECTIONS = ("total", "read", "write")
IOTUNE_LIMITS = tuple(f"{d}_{unit}_sec" for unit in ("bytes", "iops") for d in IOTUNE_DIRECTIONS)
IOTUNE_KEYS = (
    *IOTUNE_LIMITS,
    *(f"{limit}_max" for limit in IOTUNE_LIMITS),
    *(f"{limit}_max_length" for limit in IOTUNE_LIMITS),
    "size_iops_sec",
)
# QEMU's block sizes (blockio): a power of two from 512 to 32 KiB.
BLOCK_SIZES = tuple(512 << n for n in range(7))


# -- value rules ---------------------------------------------------------------

def iqn(value: Any, key: str) -> str:
    return inputs.text(value, key, max_len=223, pattern=_IQN, rule=_IQN_RULE, error=_ERROR)


def lun(value: Any, key: str, high: int = MAX_LUN) -> int:
    return inputs.number(value, key, 0, high, error=_ERROR)


def portal(value: Any, key: str) -> tuple[str, int]:
    """``"host:port"`` checked: ``(host, port)``."""
    inputs.text(value, key, max_len=300, error=_ERROR)
    return portals.parse_portal(value, key=key)


def boolean(value: Any, key: str) -> bool:
    return inputs.boolean(value, key, error=_ERROR)


def plain_text(value: Any, key: str) -> str:
    return inputs.text(value, key, max_len=1024, error=_ERROR)


def chap_name(value: Any, key: str) -> str:
    return inputs.text(value, key, max_len=255, error=_ERROR)


def libvirt_chap_name(value: Any, key: str) -> str:
    """A CHAP user name libvirt's ``<auth username=...>`` can carry."""
    return inputs.text(value, key, max_len=255, pattern=_GENERIC_NAME,
                       rule="letters, digits, '_', '+' and '-' only (libvirt's "
                       "<auth username>)", error=_ERROR)


def password(value: Any, key: str) -> str:
    """A CHAP secret: printable text; never quoted in an error."""
    if not isinstance(value, str):
        raise inputs.bad(key, f"must be a string, not {inputs.type_name(value)}",
                         secret=True, error=_ERROR)
    try:
        return inputs.text(value, key, max_len=255, error=_ERROR)
    except exception.InvalidInput:
        raise inputs.bad(key, "must be 1-255 characters of printable text on one line",
                         secret=True, error=_ERROR) from None


def serial(value: Any, key: str) -> str:
    return inputs.text(value, key, max_len=255, pattern=_SERIAL,
                       rule="letters, digits, spaces, '_', '.', '+' and '-' only "
                       "(libvirt's disk serial)", error=_ERROR)


def uuid(value: Any, key: str) -> str:
    return inputs.text(value, key, max_len=36, pattern=_UUID, rule="a UUID", error=_ERROR)


def wwn(value: Any, key: str) -> str:
    return inputs.text(value, key, max_len=18, pattern=_WWN,
                       rule="a 16-hex-digit Fibre Channel WWN", error=_ERROR)


def device_path(value: Any, key: str) -> str:
    return inputs.text(value, key, max_len=4096, pattern=_ABSOLUTE_PATH,
                       rule="an absolute path", error=_ERROR)


def auth_method(value: Any, key: str) -> str:
    inputs.text(value, key, max_len=16, error=_ERROR)
    if value.upper() not in ("CHAP", "NONE"):
        raise inputs.bad(key, "is not supported: use CHAP, or leave it out", value,
                         error=_ERROR)
    return value


def access_mode(value: Any, key: str) -> str:
    return inputs.choice(value, key, ("rw", "ro"), error=_ERROR)


def iotune_value(value: Any, key: str) -> int:
    return inputs.number(value, key, 0, MAX_IOTUNE, error=_ERROR)


def qos_specs(value: Any, key: str) -> dict:
    """Cinder's front-end ``qos_specs``: the iotune keys are limits, checked
    one by one and then together (:func:`check_iotune`)."""
    if not isinstance(value, dict):
        raise inputs.bad(key, f"must be an object, not {inputs.type_name(value)}",
                         error=_ERROR)
    limits = {name: iotune_value(value[name], f"{key}.{name}")
              for name in IOTUNE_KEYS if value.get(name) is not None}
    check_iotune(limits, key)
    return value


def check_iotune(limits: Mapping[str, int | None], key: str = "qos_specs") -> None:
    """The rules libvirt and QEMU apply across iotune limits (0 or None: no
    limit), so a document that breaks one is refused before any attach:

    - a total limit or read/write limits, never both (for ``_sec``,
      ``_sec_max`` and ``_sec_max_length`` alike);
    - a burst (``X_max``) needs its limit ``X`` and is at least ``X``;
    - a burst length (``X_max_length``) needs the burst ``X_max``.
    """
    def given(name: str) -> int | None:
        return limits.get(name) or None

    for unit in ("bytes", "iops"):
        for suffix in ("", "_max", "_max_length"):
            total = f"total_{unit}_sec{suffix}"
            clash = [f"{d}_{unit}_sec{suffix}" for d in ("read", "write")
                     if given(f"{d}_{unit}_sec{suffix}")]
            if given(total) and clash:
                raise _ERROR(reason=f"{key}.{total} cannot be combined with "
                             f"{' or '.join(f'{key}.{c}' for c in clash)}; libvirt takes "
                             "either the total or the read/write limits")
    for limit in IOTUNE_LIMITS:
        avg, burst, length = given(limit), given(f"{limit}_max"), given(f"{limit}_max_length")
        if burst and not avg:
            raise _ERROR(reason=f"{key}.{limit}_max (a burst) needs {key}.{limit} too "
                         "(QEMU bursts above a limit)")
        if burst and avg and burst < avg:
            raise _ERROR(reason=f"{key}.{limit}_max ({burst}) is below {key}.{limit} "
                         f"({avg}); a burst must be at least the limit")
        if length and not burst:
            raise _ERROR(reason=f"{key}.{limit}_max_length (how long a burst lasts) needs "
                         f"{key}.{limit}_max too")


def block_size(value: Any, key: str) -> int:
    """A guest-visible sector size: 512, 1024, ... 32768 bytes."""
    size = inputs.number(value, key, 0, BLOCK_SIZES[-1], error=_ERROR)
    if size not in BLOCK_SIZES:
        raise inputs.bad(key, "must be a power of two from 512 to 32768 (bytes)", value,
                         error=_ERROR)
    return size


def list_of(each: Check, max_items: int = inputs.MAX_ITEMS) -> Check:
    def check(value: Any, key: str) -> list:
        return inputs.items(value, key, each, max_items=max_items, error=_ERROR)
    return check


def one_or_list_of(each: Check) -> Check:
    """A value, or a non-empty list of them (``target_wwn``)."""
    def check(value: Any, key: str):
        if isinstance(value, list):
            return inputs.items(value, key, each, allow_empty=False, error=_ERROR)
        return each(value, key)
    return check


def obj(shape: "Shape") -> Check:
    def check(value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            raise inputs.bad(key, f"must be an object, not {inputs.type_name(value)}",
                             error=_ERROR)
        shape.check(value, key)
        return value
    return check


def initiator_target_map(value: Any, key: str) -> dict:
    """FC zoning: initiator WWPN -> target WWPNs."""
    if not isinstance(value, dict):
        raise inputs.bad(key, f"must be an object, not {inputs.type_name(value)}",
                         error=_ERROR)
    for initiator, targets in value.items():
        wwn(initiator, f"{key} key")
        list_of(wwn)(targets, f"{key}.{initiator}")
    return value


def anything(value: Any, key: str) -> Any:
    return value


# -- shapes --------------------------------------------------------------------

class Shape:
    """Keys of an object with the rule each must meet; some required.

    ``None`` and ``""`` count as absent, so a required key holding either is
    "missing".
    """

    def __init__(self, keys: Mapping[str, Check], required: tuple[str, ...] = ()):
        self.keys = dict(keys)
        self.required = required

    def extend(self, keys: Mapping[str, Check] | None = None,
               required: tuple[str, ...] = ()) -> "Shape":
        return Shape({**self.keys, **(keys or {})}, (*self.required, *required))

    def check(self, document: dict, prefix: str = "data") -> None:
        for key in self.required:
            if absent(document.get(key)):
                raise _ERROR(reason=f"{prefix}.{key} is missing")
        for key, rule in self.keys.items():
            value = document.get(key)
            if not absent(value):
                rule(value, f"{prefix}.{key}")


def absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "")


# Keys any driver may see: Cinder's common ones, and what hvplug records.
COMMON = Shape({
    "volume_id": plain_text,
    "access_mode": access_mode,
    "discard": boolean,
    "multiattach": boolean,
    "encrypted": boolean,
    "cacheable": boolean,
    "target_discovered": boolean,
    "qos_specs": qos_specs,
    "logical_block_size": block_size,
    "physical_block_size": block_size,
    "device_path": device_path,
    "secret_uuid": uuid,
    "secret_usage": plain_text,
})

_SELECTED_TARGET = Shape({"portal": portal, "iqn": iqn, "lun": lun},
                         required=("portal", "iqn", "lun"))

# iSCSI, through QEMU's initiator or the host's: the primary target, and
# Cinder's multipath lists (paired index by index).
ISCSI = COMMON.extend({
    "target_portal": portal,
    "target_iqn": iqn,
    "target_lun": lun,
    "target_portals": list_of(portal),
    "target_iqns": list_of(iqn),
    "target_luns": list_of(lun),
    "auth_method": auth_method,
    "auth_username": chap_name,
    "auth_password": password,
    "auth_username_in": chap_name,
    "auth_password_in": password,
    "selected_target": obj(_SELECTED_TARGET),
    "iface": plain_text,
    "multipath": boolean,
    "sessions": list_of(anything),
}, required=("target_portal", "target_iqn", "target_lun"))

# QEMU's built-in initiator: the CHAP user name lands in <auth username=...>.
ISCSI_NETWORK = ISCSI.extend({"auth_username": libvirt_chap_name})

FC_MAX_LUN = 65535


def fc_lun(value: Any, key: str) -> int:
    return lun(value, key, FC_MAX_LUN)


FIBRE_CHANNEL = COMMON.extend({
    "target_wwn": one_or_list_of(wwn),
    "target_wwns": list_of(wwn),
    "target_lun": fc_lun,
    "target_luns": list_of(fc_lun),
    "initiator_target_map": initiator_target_map,
    "multipath": boolean,
    "scsi_wwn": plain_text,
})

OUTER = Shape({
    "driver_volume_type": lambda value, key: inputs.text(
        value, key, max_len=64, pattern=_VOLUME_TYPE,
        rule="a volume type such as 'iscsi' (letters, digits, '_', '.', '-')",
        error=_ERROR),
    "data": obj(Shape({})),
    "serial": serial,
    "multiattach": boolean,
}, required=("driver_volume_type", "data"))


def check_outer(connection_info: Any) -> dict:
    """The outer document every driver relies on; ``data`` is the driver's."""
    if not isinstance(connection_info, dict):
        raise _ERROR(reason=f"it must be a JSON object, not "
                     f"{inputs.type_name(connection_info)}")
    OUTER.check(connection_info, "connection_info")
    return connection_info


def check(connection_info: Any, shape: Shape = COMMON) -> dict:
    """The whole document against ``shape`` (the driver's ``data_shape``)."""
    check_outer(connection_info)
    data = connection_info["data"]
    shape.check(data)
    if absent(connection_info.get("serial")) and not absent(data.get("volume_id")):
        serial(data["volume_id"], "data.volume_id (the disk's serial, since there is no "
               "serial)")
    logical, physical = data.get("logical_block_size"), data.get("physical_block_size")
    if not absent(logical) and not absent(physical) and int(physical) < int(logical):
        raise _ERROR(reason=f"data.physical_block_size ({physical}) is smaller than "
                     f"data.logical_block_size ({logical}); QEMU needs physical >= logical")
    return connection_info


def unknown_keys(connection_info: dict, shape: Shape = COMMON) -> list[str]:
    """The keys of a checked document that ``shape`` does not declare (they
    are ignored): outer keys, ``data`` keys and ``qos_specs`` keys, by path."""
    found = [key for key in connection_info if key not in OUTER.keys]
    data = connection_info.get("data") or {}
    found += [f"data.{key}" for key in data if key not in shape.keys]
    specs = data.get("qos_specs") if "qos_specs" in shape.keys else None
    found += [f"data.qos_specs.{key}" for key in specs or {} if key not in IOTUNE_KEYS]
    return found


# -- parsed views ----------------------------------------------------------------
# What drivers, image copies and the CLI read out of a checked ``data``: one
# place, below every layer that needs it (doc/architecture.md, "Layers").

class CommonData(TypedDict, total=False):
    """The keys of ``COMMON`` that the ``data`` views below read."""

    target_discovered: bool
    volume_id: str
    access_mode: str
    discard: bool
    multiattach: bool
    qos_specs: dict[str, Any]


class ISCSIData(CommonData, total=False):
    """``data`` of an iSCSI ``connection_info`` (``ISCSI``/``ISCSI_NETWORK``)."""

    target_portal: str
    target_iqn: str
    target_lun: int
    target_portals: list[str]
    target_iqns: list[str]
    target_luns: list[int]
    auth_method: str
    auth_username: str
    auth_password: str
    auth_username_in: str
    auth_password_in: str


class FibreChannelData(CommonData, total=False):
    """``data`` of a Fibre Channel ``connection_info`` (``FIBRE_CHANNEL``)."""

    target_wwn: str | list[str]
    target_wwns: list[str]
    target_lun: int
    target_luns: list[int]
    initiator_target_map: dict[str, list[str]]


class ConnectionInfo(TypedDict, total=False):
    """The outer document: ``driver_volume_type``, ``data``, ``serial``."""

    driver_volume_type: str
    data: dict[str, Any]
    serial: str
    multiattach: bool


def require(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    """``data[key]``, or InvalidConnectionInfo naming the missing or wrong key."""
    if key not in data or data[key] in (None, ""):
        raise _ERROR(reason=f"data.{key} is missing")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _ERROR(reason=f"data.{key} must be {names}, not {type(value).__name__}")
    return value


class ISCSITarget(NamedTuple):
    """One way to reach an iSCSI volume: portal, target IQN and LUN."""

    host: str
    port: int
    iqn: str
    lun: int

    @property
    def portal(self) -> str:
        return portals.format_portal(self.host, self.port)

    @property
    def source_name(self) -> str:
        return f"{self.iqn}/{self.lun}"


def iscsi_targets(data: Mapping[str, Any]) -> list[ISCSITarget]:
    """Every (portal, iqn, lun) ``data`` offers, the primary first, each once.

    ``target_portals`` pairs index by index with ``target_iqns`` and
    ``target_luns`` (Cinder's multipath keys); where those are absent the
    primary IQN and LUN apply to every portal.  Linear in the number of
    portals.
    """
    first_iqn = iqn(require(data, "target_iqn"), "data.target_iqn")
    first_lun = lun(require(data, "target_lun", (int, str)), "data.target_lun")
    primary = ISCSITarget(*portal(require(data, "target_portal"), "data.target_portal"),
                          first_iqn, first_lun)
    extra = data.get("target_portals") or []
    if not isinstance(extra, list):
        raise _ERROR(reason="data.target_portals must be a list")
    iqns = data.get("target_iqns") or [first_iqn] * len(extra)
    luns = data.get("target_luns") or [first_lun] * len(extra)
    if not (isinstance(iqns, list) and isinstance(luns, list)
            and len(iqns) == len(luns) == len(extra)):
        raise _ERROR(
            reason="data.target_portals, target_iqns and target_luns must be lists of "
            f"one length (got {_length(extra)}, {_length(iqns)} and {_length(luns)})")
    targets: dict[ISCSITarget, None] = {primary: None}
    for index, (each_portal, each_iqn, each_lun) in enumerate(zip(extra, iqns, luns,
                                                                  strict=True)):
        target = ISCSITarget(
            *portal(each_portal, f"data.target_portals[{index}]"),
            iqn(each_iqn, f"data.target_iqns[{index}]"),
            lun(each_lun, f"data.target_luns[{index}]"))
        targets.setdefault(target, None)
    return list(targets)


def _length(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else inputs.type_name(value)


def chap_credentials(data: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(username, password)`` for CHAP, None without auth; checked."""
    method = data.get("auth_method")
    if not method or str(method).lower() == "none":
        return None
    if str(method).upper() != "CHAP":
        raise _ERROR(
            reason=f"data.auth_method {inputs.shown(method)} is not supported (use CHAP or "
            "leave it out)")
    return require(data, "auth_username"), require(data, "auth_password")


def initiator_name(configured: str | None = None, initiator_file: str | None = None) -> str:
    """This host's initiator IQN: ``configured``, else open-iscsi's file.

    Both default to ``[libvirt] iscsi_initiator_name`` and
    ``iscsi_initiator_file``.
    """
    if configured is None or initiator_file is None:
        from hvplug.conf import CONF  # the options only; no layer above

        configured = CONF.libvirt.iscsi_initiator_name if configured is None else configured
        initiator_file = initiator_file or CONF.libvirt.iscsi_initiator_file
    if configured:
        try:
            return iqn(configured, "[libvirt] iscsi_initiator_name")
        except exception.InvalidInput as exc:
            raise exception.ConfigFileError(reason=exc.kwargs["reason"]) from None
    path = Path(initiator_file or "")
    try:
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    except OSError as exc:
        raise exception.InitiatorNameNotFound(path=path, reason=exc.strerror) from None
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key.strip() == "InitiatorName" and value.strip():
            try:
                return iqn(value.strip(), "InitiatorName")
            except exception.InvalidInput as exc:
                raise exception.InitiatorNameNotFound(
                    path=path, reason=exc.kwargs["reason"]) from None
    raise exception.InitiatorNameNotFound(path=path, reason="no InitiatorName= line")


FcLun = tuple[str, int]  # (target port WWN, lower case without 0x; LUN)
_FC_WWN = re.compile(r"^(?:0x)?([0-9a-fA-F]{16})$")


def _fc_wwn(value: Any) -> str:
    match = _FC_WWN.match(value) if isinstance(value, str) else None
    if not match:
        raise _ERROR(reason=f"{value!r} is not a 16-hex-digit Fibre Channel WWN")
    return match[1].lower()


def fc_luns(data: Mapping[str, Any]) -> list[FcLun]:
    """The (target WWN, LUN) paths ``data`` names, as os-brick pairs them."""
    given = data.get("target_wwns") or require(data, "target_wwn", (str, list))
    wwns = [_fc_wwn(w) for w in ([given] if isinstance(given, str) else given)]
    if not wwns:
        raise _ERROR(reason="data.target_wwn is empty")
    luns = data.get("target_luns") or [require(data, "target_lun", int)]
    if any(not isinstance(each, int) or isinstance(each, bool) for each in luns):
        raise _ERROR(reason="data.target_luns must be integers")
    if len(luns) == 1:
        luns = luns * len(wwns)
    if len(luns) != len(wwns):
        raise _ERROR(reason=f"{len(wwns)} target WWNs but {len(luns)} LUNs")
    return list(zip(wwns, luns, strict=True))
