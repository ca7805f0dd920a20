"""Seeded generator of ``connection_info`` documents for ``hvplug render``.

Every case comes from one ``random.Random(f"{seed}:{index}")``, so case
``index`` of seed ``seed`` is the same document on every machine and in
every run, whatever ``count`` is::

    for case in generate(seed=1234, count=10_000):
        case.data      # the file's bytes, as ``--connection-info FILE`` reads them
        case.argv      # ``render`` arguments after the file: ["--json", "--bus", "scsi"]
        case.stdin     # True: passed as ``--connection-info -``
        case.config    # "net" (default volume_drivers) or "host" (host-attached iSCSI)
        case.passwords # unique marker strings that must never be printed
        case.note      # what was done to the seed, e.g. "seed iscsi-chap; value data.target_lun=-1"

Seeds: every ``driver_volume_type`` render handles without a host:
``iscsi`` (QEMU's initiator: with and without CHAP, multipath keys,
qos_specs, access_mode, discard, multiattach, serial, volume_id, IPv6
portals, digit-string LUNs), ``iser`` and ``iscsi`` on the host-attached
driver (``config="host"``; a block disk on ``device_path`` or the by-path
link it computes), ``fibre_channel`` with ``device_path`` (without it the
driver looks for a by-path link on the host, so those are invalid variants).

Mutations: structural (drop keys, a wrong type at any key, nesting up to
100,000 deep, huge lists, duplicate keys, unknown keys, a top level that is
not an object), values (C0/C1 controls, DEL, U+FFFE/U+FFFF, lone
surrogates as ``\\ud800`` escapes, non-BMP characters, ``<>&'"%{}``, unicode
digits, huge/negative/float numbers, 2**64+1, 4,301-digit integers, NaN
and Infinity, empty, whitespace and very long strings) and raw bytes (not
UTF-8, BOMs, UTF-16, truncated or invalid JSON).  CLI arguments vary too:
``--json``, ``--bus``, ``--dev`` (valid and hostile names), stdin.

Documents are trees of plain JSON values plus :class:`Raw` (text written
as is: big integers, ``NaN``, deep nesting) and :class:`Dup` (an object
that may repeat a key); :func:`dump` writes them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
from collections.abc import Iterator
from typing import Any

SEED_ENV = "HVPLUG_FUZZ_SEED"
CASES_ENV = "HVPLUG_FUZZ_CASES"
DEFAULT_SEED = 20240612
DEFAULT_CASES = 10_000

INITIATOR_IQN = "iqn.1993-08.org.example:01:fuzz"
HOST_DRIVERS = ("iscsi=hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver,"
                "iser=hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver")
CONFIGS = {
    "net": f"[libvirt]\niscsi_initiator_name = {INITIATOR_IQN}\n",
    "host": (f"[libvirt]\niscsi_initiator_name = {INITIATOR_IQN}\n"
             f"volume_drivers = {HOST_DRIVERS}\niscsi_iface = iser\n"),
}


def seed_from_env() -> int:
    return int(os.environ.get(SEED_ENV, DEFAULT_SEED))


def cases_from_env() -> int:
    return int(os.environ.get(CASES_ENV, DEFAULT_CASES))


# -- documents -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Raw:
    """JSON text written as is (``NaN``, ``1e400``, a 4,301-digit integer, ``[[[...]]]``)."""

    text: str


@dataclasses.dataclass
class Dup:
    """A JSON object as a list of pairs, so a key can appear twice."""

    pairs: list


def dump(value: Any, ascii_only: bool = True) -> str:
    """JSON text of a document tree (see the module docstring)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Dup):
        return "{" + ", ".join(f"{dump(k, ascii_only)}: {dump(v, ascii_only)}"
                               for k, v in value.pairs) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dump(k, ascii_only)}: {dump(v, ascii_only)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, Dup):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.pairs)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def encode(doc: Any, ascii_only: bool = True) -> bytes:
    """The file's bytes: UTF-8 (lone surrogates always as ``\\uXXXX`` escapes)."""
    return dump(doc, ascii_only or _has_surrogate(doc)).encode("utf-8")


@dataclasses.dataclass
class Case:
    id: str
    data: bytes
    note: str
    kind: str = "seed"                 # seed | structural | value | bytes | cli | named
    argv: list = dataclasses.field(default_factory=list)
    stdin: bool = False
    config: str = "net"
    passwords: list = dataclasses.field(default_factory=list)
    doc: Any = None                    # the tree ``data`` was written from, if any
    ascii_only: bool = True

    def to_record(self, found: str = "") -> dict:
        """The regression corpus's line for this case."""
        record = {"id": self.id, "kind": self.kind, "note": self.note}
        if found:
            record["found"] = found
        try:
            record["text"] = self.data.decode("utf-8")
        except UnicodeDecodeError:
            record["b64"] = base64.b64encode(self.data).decode()
        record.update(argv=self.argv, stdin=self.stdin, config=self.config,
                      passwords=self.passwords)
        return record

    @classmethod
    def from_record(cls, record: dict) -> Case:
        if "build" in record:
            data = build(record["build"], **record.get("args", {}))
        elif "b64" in record:
            data = base64.b64decode(record["b64"])
        else:
            data = record["text"].encode("utf-8", "surrogatepass")
        try:  # the tree, for the properties that compare output with input
            doc = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):
            doc = None
        return cls(id=record["id"], data=data, note=record["note"],
                   kind=record.get("kind", "named"), argv=list(record.get("argv", [])),
                   stdin=bool(record.get("stdin")), config=record.get("config", "net"),
                   passwords=list(record.get("passwords", [])), doc=doc)


# -- valid seeds ---------------------------------------------------------------------

def _name(rng: random.Random, n: int = 6) -> str:
    return "".join(rng.choice("abcdef0123456789") for _ in range(n))


def _iqn(rng, vol: str) -> str:
    return rng.choice(["iqn.2010-10.org.openstack:volume-", "iqn.2003-01.org.linux-iscsi.t:",
                       "iqn.1992-05.com.example:storage.disk-"]) + vol


def _ipv4(rng) -> str:
    return f"{rng.choice([10, 127, 192, 198])}.{rng.randrange(256)}.{rng.randrange(256)}." \
           f"{rng.randrange(1, 255)}"


def _ipv6(rng) -> str:
    return rng.choice(["2001:db8::", "fd00:1:2::", "::ffff:192.0.2."]) + str(rng.randrange(1, 200))


def _portal(rng) -> str:
    port = rng.choice([3260, 3260, 3261, 860, rng.randrange(1, 65536)])
    kind = rng.random()
    if kind < 0.55:
        return f"{_ipv4(rng)}:{port}"
    if kind < 0.75:
        return f"[{_ipv6(rng)}]:{port}"
    if kind < 0.9:
        return f"{rng.choice(['storage', 'san-a', 'target1.example.com'])}:{port}"
    return rng.choice([_ipv4(rng), f"[{_ipv6(rng)}]", "storage.example.org"])  # default port


def _lun(rng):
    value = rng.choice([0, 1, 1, 2, 7, 255, rng.randrange(0, 16384)])
    return str(value) if rng.random() < 0.2 else value


def _marker(rng, seed: int, index: int) -> str:
    return f"PwMark{seed:x}q{index}z{_name(rng, 8)}"


def _qos(rng) -> dict:
    keys = rng.choice([["total_bytes_sec"], ["read_iops_sec", "write_iops_sec"],
                       ["total_iops_sec", "read_bytes_sec", "write_bytes_sec"],
                       ["size_iops_sec", "total_bytes_sec"]])
    qos = {k: rng.choice([0, 100, 500, 104857600, str(rng.randrange(1, 10**6))]) for k in keys}
    if rng.random() < 0.3:
        qos["consumer"] = "front-end"  # ignored by hvplug
    return qos


def _optional(rng, data: dict, info: dict, vol: str) -> None:
    if rng.random() < 0.6:
        data["volume_id"] = vol
    if rng.random() < 0.6:
        info["serial"] = vol
    if rng.random() < 0.5:
        data["access_mode"] = rng.choice(["rw", "ro"])
    if rng.random() < 0.3:
        data["discard"] = rng.choice([True, False])
    if rng.random() < 0.3:
        data["multiattach"] = rng.choice([True, False])
    if rng.random() < 0.35:
        data["qos_specs"] = _qos(rng)
    if rng.random() < 0.3:
        data["target_discovered"] = rng.choice([True, False])
    if rng.random() < 0.1:
        data["encrypted"] = False


def _chap(rng, data: dict, passwords: list, marker) -> None:
    data["auth_method"] = rng.choice(["CHAP", "CHAP", "chap", "Chap"])
    data["auth_username"] = rng.choice(["user-", "u", "docuser", "tenant_"]) + _name(rng, 4)
    data["auth_password"] = marker()
    passwords.append(data["auth_password"])


def seed_iscsi(rng, marker, chap: bool | None = None, multipath: bool | None = None,
               ipv6: bool | None = None):
    vol = _name(rng)
    iqn = _iqn(rng, vol)
    lun = _lun(rng)
    data = {"target_portal": f"[{_ipv6(rng)}]:3260" if ipv6 else _portal(rng),
            "target_iqn": iqn, "target_lun": lun}
    info = {"driver_volume_type": "iscsi", "data": data}
    passwords: list[str] = []
    if chap if chap is not None else rng.random() < 0.6:
        _chap(rng, data, passwords, marker)
    elif rng.random() < 0.2:
        data["auth_method"] = rng.choice(["None", "none", None, ""])
    if multipath if multipath is not None else rng.random() < 0.35:
        n = rng.randrange(1, 5)
        data["target_portals"] = [data["target_portal"]] + [_portal(rng) for _ in range(n)]
        if rng.random() < 0.7:
            data["target_iqns"] = [iqn] * (n + 1)
            data["target_luns"] = [lun] + [_lun(rng) for _ in range(n)]
    _optional(rng, data, info, vol)
    return info, passwords


def seed_host_attached(rng, marker, volume_type: str):
    """iser (or iscsi on the host driver): a block disk on device_path or by-path."""
    info, passwords = seed_iscsi(rng, marker)
    info["driver_volume_type"] = volume_type
    if rng.random() < 0.5:
        info["data"]["device_path"] = rng.choice(
            ["/dev/sdb", "/dev/dm-3", "/dev/mapper/mpatha",
             f"/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.openstack:"
             f"v-{_name(rng)}-lun-1".strip()])
    if rng.random() < 0.3 and passwords:
        info["data"]["auth_username_in"] = "target-" + _name(rng, 4)
        info["data"]["auth_password_in"] = marker()
        passwords.append(info["data"]["auth_password_in"])
    return info, passwords


def seed_fibre_channel(rng, marker, device_path: bool = True):
    vol = _name(rng)
    wwns = [f"5001f4a0c0d1{rng.randrange(16**4):04x}" for _ in range(rng.randrange(1, 3))]
    data = {"target_discovered": True, "target_wwn": wwns if rng.random() < 0.7 else wwns[0],
            "target_lun": rng.randrange(0, 256),
            "initiator_target_map": {"21000024ff4b9a3c": wwns}}
    info = {"driver_volume_type": "fibre_channel", "data": data}
    if device_path:
        data["device_path"] = f"/dev/disk/by-path/pci-0000:05:00.0-fc-0x{wwns[0]}-lun-" \
                              f"{data['target_lun']}"
    _optional(rng, data, info, vol)
    return info, []


# (name, config, builder(rng, marker), valid?)
SEEDS = [
    ("iscsi", "net", lambda r, m: seed_iscsi(r, m), True),
    ("iscsi-chap", "net", lambda r, m: seed_iscsi(r, m, chap=True), True),
    ("iscsi-nochap", "net", lambda r, m: seed_iscsi(r, m, chap=False), True),
    ("iscsi-multipath-chap", "net", lambda r, m: seed_iscsi(r, m, chap=True, multipath=True), True),
    ("iscsi-ipv6", "net", lambda r, m: seed_iscsi(r, m, ipv6=True), True),
    ("iser", "net", lambda r, m: seed_host_attached(r, m, "iser"), True),
    ("iscsi-host", "host", lambda r, m: seed_host_attached(r, m, "iscsi"), True),
    ("iser-host", "host", lambda r, m: seed_host_attached(r, m, "iser"), True),
    ("fibre_channel", "net", lambda r, m: seed_fibre_channel(r, m), True),
    ("fibre_channel-no-device", "net", lambda r, m: seed_fibre_channel(r, m, False), False),
]
SEED_WEIGHTS = [3, 4, 2, 3, 2, 2, 2, 1, 2, 1]

# -- hostile values ------------------------------------------------------------------

CONTROL_CHARS = ["\x00", "\x01", "\x07", "\x08", "\t", "\n", "\r", "\x0b", "\x0c", "\x1b",
                 "\x1f", "\x7f", "\x80", "\x85", "\x9b", "\x9f", "\u2028", "\u2029"]
CONTROL_STRINGS = ["\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\nhvplug: error: forged line",
                   "\r\nhvplug: error: forged", "\x9b31m", "a\x00b", "\x00"]
NONCHARACTERS = ["\ufffe", "\uffff", "\ufdd0", "\U0001fffe", "\U0010ffff", "\ufeff"]
SURROGATES = ["\ud800", "\udfff", "\udc80", "\udc00\ud800", "a\ud83d", "\udbff"]
NON_BMP = ["\U0001f600", "\U0001d7d8", "\U00020000", "\U000e0001"]
# Printable to a regex of controls, invisible or misleading on a terminal.
FORMAT_CHARS = ["\u200b", "\u200d", "\u200e", "\u202e", "\u2066", "\ufeff", "\u0301",
                "\u00ad", "\u00a0", "\u3000", "\u2028", "\u2029", "\u0085"]
PUNCTUATION = [*list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ "), "é", "ß", "а", "ａ", "µ", "ª"]  # noqa: RUF001 - confusables on purpose
NEAR_HOSTS = ["a..b", "-a", "a-", "a_b", "1.2.3.4.5", "256.1.1.1", "1.2.3", "01.2.3.4",
              "0x7f.0.0.1", "host.", ".host", "\u00e9.example", "xn--e1afmkfd.example",
              "a" * 64 + ".example", "a" * 254, "[::ffff:1.2.3.4]", "[fe80::1%eth0]",
              "[::1%25lo]", "[::]", "[:::]", "[1::2::3]", "[2001:db8::g]", "[v1.x]",
              "[192.0.2.1]", "::1", "2001:db8::1:3260", "[2001:db8::1]]", "ho st",
              "host\u2028", "localhost", "LOCALHOST", "0", "0.0.0.0", "255.255.255.255"]
SPECIALS = ["<", ">", "&", "'", '"', "%", "{}", "{0}", "%s", "%(x)s", "%n", "<>&'\"%{}",
            "]]>", "&amp;", "<!--", "<![CDATA[", "ho<st>&x", "\\", "/", "..", "*", "$(id)",
            "`id`", ";", ",", "=", ":", "[", "]", "@", "#"]
UNICODE_DIGITS = ["\u00b2", "\u0663", "\u2460", "\U0001d7d8", "\uff11", "\u00b9\u00b2\u00b3",
                  "\u0661\u0662", "\u09e7", "\u0f20", "\u00bd", "\u2167"]
WHITESPACE = ["", " ", "  ", "\t", "\n", " x ", "\u00a0", "\u3000", "\u200b"]
NUMBER_STRINGS = ["-1", "0", "00", "01", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "1_000",
                  "18446744073709551615", "18446744073709551616", "18446744073709551617",
                  "9223372036854775808", "-0", "NaN", "inf", "4294967296", "65536", "65535"]
NUMBERS = [0, 1, -1, 2, 255, 256, 16383, 16384, 65535, 65536, 2**31, 2**32, 2**63 - 1, 2**63,
           2**64 - 1, 2**64, 2**64 + 1, -2**63, -2**64, 10**30, 1.5, -0.0, 0.0, 1e308, 3.0,
           Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"),
           Raw("1" * 4301), Raw("9" * 4300), Raw("-" + "1" * 4301), Raw("1E+2"),
           Raw("0.000000000000000000000000001")]
TYPED = [[], [1], ["a"], [None], {}, {"a": 1}, {"": ""}, 0, 1, -1, 1.5, True, False, None,
         "", "x", "CHAP", [[]], [{}]]


def hostile_string(rng: random.Random) -> str:
    pool = rng.choice([CONTROL_CHARS, CONTROL_STRINGS, NONCHARACTERS, SURROGATES, NON_BMP,
                       SPECIALS, UNICODE_DIGITS, WHITESPACE, NUMBER_STRINGS, ["long"],
                       FORMAT_CHARS, PUNCTUATION, PUNCTUATION])
    value = rng.choice(pool)
    if value == "long":
        value = rng.choice(["a", "9", "é", "<", "\U0001f600"]) * rng.choice(
            [256, 1025, 4096, 65537, 300_000])
    return value


def mutate_string(rng: random.Random, original: str) -> str:
    bad = hostile_string(rng)
    how = rng.random()
    if how < 0.35:
        return bad
    if how < 0.55:
        return original + bad
    if how < 0.7:
        return bad + original
    cut = rng.randrange(len(original) + 1)
    return original[:cut] + bad + original[cut:]


def mutate_password(rng: random.Random, original: str) -> str:
    """A hostile password that still carries its marker."""
    bad = hostile_string(rng)
    if len(bad) > 5000:
        bad = bad[:5000]
    return rng.choice([original + bad, bad + original, original[:6] + bad + original[6:]])


def hostile_number(rng: random.Random):
    if rng.random() < 0.3:
        return rng.choice(NUMBER_STRINGS + UNICODE_DIGITS)
    return rng.choice(NUMBERS)


# -- paths in a document ----------------------------------------------------------------

def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path in ``doc`` (containers and leaves)."""
    found = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.append((*prefix, key))
            found.extend(paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found.append((*prefix, i))
            found.extend(paths(value, (*prefix, i)))
    return found


def get_at(doc, path):
    for step in path:
        doc = doc[step]
    return doc


def set_at(doc, path, value) -> None:
    get_at(doc, path[:-1])[path[-1]] = value


def del_at(doc, path) -> None:
    parent = get_at(doc, path[:-1])
    del parent[path[-1]]


def show(path: tuple) -> str:
    return ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path) or "(top)"


def _short(value) -> str:
    text = repr(value.text if isinstance(value, Raw) else value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} chars)"


KNOWN_DATA_KEYS = ["target_portal", "target_iqn", "target_lun", "target_portals", "target_iqns",
                   "target_luns", "auth_method", "auth_username", "auth_password",
                   "auth_username_in", "auth_password_in", "access_mode", "discard",
                   "multiattach", "qos_specs", "volume_id", "device_path", "target_wwn",
                   "target_wwns", "selected_target", "secret_uuid", "secret_usage",
                   "target_discovered", "initiator_target_map", "iface", "sessions"]
QOS_KEYS = ["total_bytes_sec", "read_bytes_sec", "write_bytes_sec", "total_iops_sec",
            "read_iops_sec", "write_iops_sec", "size_iops_sec"]


def _is_password_path(path: tuple) -> bool:
    return bool(path) and isinstance(path[-1], str) and "password" in path[-1]


# -- mutations ------------------------------------------------------------------------
# Each takes (rng, doc, case-state) and returns a note; it may replace the
# document by returning (note, new_doc).

def _pick_path(rng, doc, leaves_only: bool = False):
    candidates = [p for p in paths(doc)
                  if not leaves_only or not isinstance(get_at(doc, p), (dict, list))]
    return rng.choice(candidates) if candidates else None


def m_drop_key(rng, doc, st):
    path = _pick_path(rng, doc)
    if path is None:
        return "drop: nothing"
    del_at(doc, path)
    return f"drop {show(path)}"


def m_wrong_type(rng, doc, st):
    path = _pick_path(rng, doc)
    if path is None:
        return "wrong-type: nothing"
    value = rng.choice(TYPED)
    value = json.loads(json.dumps(value))  # a fresh copy
    set_at(doc, path, value)
    return f"type {show(path)}={_short(value)}"


def m_add_key(rng, doc, st):
    """A key the seed lacks, with a value of any type."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        return "add: no data"
    key = rng.choice(KNOWN_DATA_KEYS)
    roll = rng.random()
    if roll < 0.3:
        value = json.loads(json.dumps(rng.choice(TYPED)))
    elif roll < 0.5:
        value = hostile_number(rng)
    elif roll < 0.7:
        value = hostile_string(rng)
    elif key == "qos_specs":
        value = {rng.choice(QOS_KEYS): hostile_number(rng)}
    else:
        value = [hostile_string(rng) if rng.random() < 0.5 else hostile_number(rng)
                 for _ in range(rng.randrange(0, 4))]
    if _is_password_path((key,)) and isinstance(value, str):
        value = mutate_password(rng, st["marker"]())
        st["passwords"].append(value)
    data[key] = value
    return f"add data.{key}={_short(value)}"


def m_value(rng, doc, st):
    path = _pick_path(rng, doc, leaves_only=True)
    if path is None:
        return "value: nothing"
    old = get_at(doc, path)
    if _is_password_path(path) and isinstance(old, str):
        new = mutate_password(rng, old)
        st["passwords"].append(new)
    elif isinstance(old, str) and "portal" in str(path) and rng.random() < 0.4:
        host = rng.choice(NEAR_HOSTS)
        new = rng.choice([host, f"{host}:3260", f"{host}:{hostile_string(rng)[:8]}"])
    elif isinstance(old, str) and rng.random() < 0.75:
        new = mutate_string(rng, old)
    elif isinstance(old, (int, float)) and not isinstance(old, bool) and rng.random() < 0.75:
        new = hostile_number(rng)
    else:
        new = hostile_number(rng) if rng.random() < 0.5 else hostile_string(rng)
    set_at(doc, path, new)
    return f"value {show(path)}={_short(new)}"


def m_key_name(rng, doc, st):
    """A hostile key: an unknown one, or a known one spelt with controls."""
    target = doc.get("data") if isinstance(doc, dict) and isinstance(doc.get("data"), dict) \
        else doc
    if not isinstance(target, dict):
        return "key: not an object"
    key = rng.choice(["", "\x00", "target_lun\x00", "target_iqn ", "Target_IQN", "\ud800",
                      "<x>", "a" * 10000, "__proto__", "data", "auth_password\n"])
    value = rng.choice(["x", 1, None, st["marker"]()])
    if isinstance(value, str) and value.startswith("PwMark"):
        if "password" in key:
            st["passwords"].append(value)
        else:
            value = "x"
    target[key] = value
    return f"key {key!r:.40}"


def m_nesting(rng, doc, st):
    depth = rng.choice([20, 200, 500, 900, 990, 999, 1000, 1001, 1500, 5000, 100_000])
    opener, closer = rng.choice([("[", "]"), ('{"a": ', "}"), ('{"data": ', "}")])
    inner = rng.choice(["1", '"x"', "[]", "{}"])
    raw = Raw(opener * depth + inner + closer * depth)
    if not isinstance(doc, dict) or rng.random() < 0.15:
        return f"nesting depth {depth} at top", raw
    path = _pick_path(rng, doc) or ("data",)
    set_at(doc, path, raw)
    return f"nesting depth {depth} at {show(path)}"


def m_huge_list(rng, doc, st):
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        return "huge: no data"
    n = rng.choice([100, 500, 1000, 1500])
    which = rng.choice(["portals", "portals-same", "iqns", "luns", "qos", "mismatch"])
    iqn = data.get("target_iqn") if isinstance(data.get("target_iqn"), str) else "iqn.x:y"
    if which == "portals":
        data["target_portals"] = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:3260"
                                  for i in range(n)]
    elif which == "portals-same":
        data["target_portals"] = ["192.0.2.1:3260"] * n
    elif which == "iqns":
        data["target_portals"] = ["192.0.2.1:3260"] * n
        data["target_iqns"] = [f"{iqn}-{i}" for i in range(n)]
    elif which == "luns":
        data["target_portals"] = ["192.0.2.1:3260"] * n
        data["target_luns"] = list(range(n))
    elif which == "qos":
        data["qos_specs"] = {f"k{i}": i for i in range(n * 10)}
    else:
        data["target_portals"] = ["192.0.2.1:3260"] * n
        data["target_iqns"] = [iqn] * (n - 1)
    return f"huge {which} n={n}"


def m_duplicate_key(rng, doc, st):
    data = doc.get("data") if isinstance(doc, dict) else None
    target, where = (data, "data") if isinstance(data, dict) and rng.random() < 0.8 else (doc, "")
    if not isinstance(target, dict) or not target:
        return "dup: nothing"
    key = rng.choice(list(target))
    other = rng.choice([hostile_string(rng), hostile_number(rng), None, [], {}])
    if "password" in key and isinstance(other, str):
        other = mutate_password(rng, st["marker"]())
        st["passwords"].append(other)
    pairs = list(target.items())
    pairs.insert(rng.randrange(len(pairs) + 1), (key, other))
    dup = Dup(pairs)
    if where:
        doc["data"] = dup
    else:
        return f"duplicate key {key!r}", dup
    return f"duplicate key {where}.{key}"


def m_top_level(rng, doc, st):
    new = rng.choice([[], [doc], "iscsi", 1, None, True, Raw("NaN"), {"data": doc},
                      {"driver_volume_type": "iscsi"}, {"driver_volume_type": "iscsi",
                                                        "data": None},
                      {"driver_volume_type": "iscsi", "data": []}])
    return f"top level {type(new).__name__}", new


STRUCTURAL = [(m_drop_key, 4), (m_wrong_type, 6), (m_add_key, 6), (m_nesting, 1),
              (m_huge_list, 1), (m_duplicate_key, 2), (m_top_level, 1), (m_key_name, 1)]
VALUE = [(m_value, 1)]


def _weighted(rng, table):
    return rng.choices([f for f, _ in table], weights=[w for _, w in table])[0]


# -- byte-level -----------------------------------------------------------------------

def bytes_variant(rng: random.Random, text: str) -> tuple[str, bytes]:
    kind = rng.choice(["latin1", "random", "utf16", "utf16-bom", "utf32", "bom", "bom-twice",
                       "surrogate-bytes", "overlong", "truncated-utf8", "truncated",
                       "trailing", "comment", "single-quotes", "trailing-comma", "empty",
                       "whitespace", "nul-raw", "ctl-raw", "opening-only", "nan-literals"])
    raw = text.encode("utf-8")
    if kind == "latin1":
        return kind, text.replace('"data"', '"d\u00e9ta"', 1).replace(
            'iqn', 'iq\u00f1', 1).encode("latin-1", "replace")
    if kind == "random":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == "utf16":
        return kind, text.encode("utf-16-le")
    if kind == "utf16-bom":
        return kind, text.encode("utf-16")
    if kind == "utf32":
        return kind, text.encode("utf-32")
    if kind == "bom":
        return kind, b"\xef\xbb\xbf" + raw
    if kind == "bom-twice":
        return kind, b"\xef\xbb\xbf\xef\xbb\xbf" + raw
    if kind == "surrogate-bytes":  # CESU: a surrogate encoded as UTF-8 bytes
        return kind, raw.replace(b'"data"', b'"d\xed\xa0\x80ta"', 1)
    if kind == "overlong":
        return kind, raw.replace(b"iqn", b"iq\xc0\xae", 1)
    if kind == "truncated-utf8":
        return kind, raw.replace(b'"target_iqn": "', b'"target_iqn": "\xe2\x82', 1)
    if kind == "truncated":
        return kind, raw[:rng.randrange(len(raw))]
    if kind == "trailing":
        return kind, raw + rng.choice([b"x", b"}", b" {}", b"\x00", b"\n\n]"])
    if kind == "comment":
        return kind, b"// connection_info\n" + raw
    if kind == "single-quotes":
        return kind, raw.replace(b'"', b"'")
    if kind == "trailing-comma":
        return kind, raw[:-1] + b", }" if raw.endswith(b"}") else raw + b","
    if kind == "empty":
        return kind, b""
    if kind == "whitespace":
        return kind, rng.choice([b" ", b"\n", b"\t\r\n ", b"\x0c"])
    if kind == "nul-raw":
        return kind, raw.replace(b'": "', b'": "\x00', 1)
    if kind == "ctl-raw":
        return kind, raw.replace(b'": "', b'": "\x1b[31m\n', 1)
    if kind == "opening-only":
        return kind, rng.choice([b"{", b"[" * 100_000, b'{"a":' * 50_000])
    return kind, raw.replace(b'"target_lun": ', rng.choice(
        [b'"target_lun": NaN, "x": ', b'"target_lun": Infinity, "x": ',
         b'"target_lun": -Infinity, "x": ']), 1)


# -- CLI arguments ---------------------------------------------------------------------

GOOD_DEVS = {"virtio": ["vdb", "vdz", "vdaa", "vda"], "scsi": ["sdb", "sdc", "sdzz"],
             "sata": ["sdb", "sdf"]}
BAD_DEVS = ["vd\u00e9", "vd\u0430", "vd\u00df", "vd\u00b5", "vd\u00aa", "sd\uff41",
            "vd", "sd", "sda0", "hda", "vdA", "x\ny", "sdb\nhvplug: error: forged",
            "\x1b[31mvdb", "vd\x7f", "vd\x9b", "../vdb", "vd" + "a" * 300, "vd\u00e9",
            "vd\U0001d41a", "vd\udcff", "vd\u2028a", "vd b", "vd%s", "vd{}", "-", "vd\t"]


def cli_args(rng: random.Random, dev: bool = True) -> list[str]:
    """``render`` options after ``--connection-info FILE``, in a random order."""
    groups: list[list[str]] = []
    if rng.random() < 0.4:
        groups.append(["--json"])
    bus = rng.choices([None, "scsi", "sata", "virtio"], weights=[70, 20, 5, 5])[0]
    if bus:
        groups.append(["--bus", bus])
    if dev and rng.random() < 0.12:
        name = (rng.choice(GOOD_DEVS[bus or "virtio"]) if rng.random() < 0.5
                else rng.choice(BAD_DEVS))
        groups.append([f"--dev={name}"] if name.startswith("-") else ["--dev", name])
    rng.shuffle(groups)
    return [arg for group in groups for arg in group]


# -- cases ----------------------------------------------------------------------------

def make_seed(rng, seed: int, index: int, which: int | None = None):
    counter = iter(range(1000))
    def marker():
        return f"{_marker(rng, seed, index)}n{next(counter)}"
    if which is None:
        which = rng.choices(range(len(SEEDS)), weights=SEED_WEIGHTS)[0]
    name, config, builder, valid = SEEDS[which]
    doc, passwords = builder(rng, marker)
    return name, config, doc, passwords, marker, valid


def make_case(seed: int, index: int) -> Case:
    """Case ``index`` of ``seed``: the same bytes every time."""
    rng = random.Random(f"{seed}:{index}")
    name, config, doc, passwords, marker, _ = make_seed(rng, seed, index)
    st = {"passwords": passwords, "marker": marker}
    argv = cli_args(rng)
    stdin = rng.random() < 0.03
    ascii_only = rng.random() < 0.7
    cid = f"{seed}-{index}"
    roll = rng.random()
    notes = [f"seed {name}"]
    if roll < 0.04:
        kind = "seed"
    elif roll < 0.10:
        kind = "bytes"
        what, data = bytes_variant(rng, dump(doc, ascii_only))
        return Case(cid, data, f"seed {name}; bytes {what}", kind, argv, stdin, config,
                    passwords, None, ascii_only)
    else:
        kind = "structural" if roll < 0.45 else "value"
        table = STRUCTURAL if kind == "structural" else VALUE
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            result = _weighted(rng, table)(rng, doc, st)
            if isinstance(result, tuple):
                note, doc = result
                notes.append(note)
                break  # the document is no longer the seed's shape
            notes.append(result)
            if not isinstance(doc, dict):
                break
    return Case(cid, encode(doc, ascii_only), "; ".join(notes), kind, argv, stdin, config,
                st["passwords"], doc, ascii_only)


def generate(seed: int | None = None, count: int | None = None) -> Iterator[Case]:
    seed = seed_from_env() if seed is None else seed
    count = cases_from_env() if count is None else count
    for index in range(count):
        yield make_case(seed, index)


def valid_seeds(seed: int = DEFAULT_SEED, per_seed: int = 20) -> Iterator[Case]:
    """Unmutated documents of every valid seed: each must render (exit 0)."""
    for which, (name, config, _, valid) in enumerate(SEEDS):
        if not valid:
            continue
        for i in range(per_seed):
            rng = random.Random(f"{seed}:valid:{name}:{i}")
            _, _, doc, passwords, _, _ = make_seed(rng, seed, i, which)
            yield Case(f"{seed}-valid-{name}-{i}", encode(doc, rng.random() < 0.5),
                       f"seed {name}", "seed", cli_args(rng, dev=False), False, config,
                       passwords, doc)


# -- named builders (regression corpus entries too big to store) ---------------------

def _base(**data) -> dict:
    base = {"target_portal": "192.0.2.10:3260", "target_iqn": "iqn.2010-10.org.openstack:v-1",
            "target_lun": 1}
    base.update(data)
    return {"driver_volume_type": "iscsi", "data": base, "serial": "v-1"}


def build(name: str, **args) -> bytes:
    """Bytes of a named, parameterised case (see tests/data/fuzz/regressions.jsonl)."""
    if name == "nesting":
        depth = args.get("depth", 1000)
        return (b'{"driver_volume_type": "iscsi", "data": ' + b"[" * depth + b"]" * depth
                + b"}")
    if name == "portals":
        n = args.get("n", 10_000)
        portals = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:3260" for i in range(n)]
        return json.dumps(_base(target_portals=portals)).encode()
    if name == "big_lun":
        return (json.dumps(_base(target_lun=0)).replace('"target_lun": 0', '"target_lun": '
                                                        + "1" * args.get("digits", 4301))
                .encode())
    raise KeyError(name)


def portals_doc(n: int, distinct: bool = True) -> dict:
    """A valid iscsi connection_info with ``n`` target_portals (the benchmark's)."""
    portals = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:3260" if distinct
               else "192.0.2.10:3260" for i in range(n)]
    return _base(target_portals=portals)
