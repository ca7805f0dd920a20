"""open-iscsi iface records: list, show, create, update, delete, generate, verify.

An iface binds iSCSI sessions to a transport and a port.  ``default``
(software TCP) and ``iser`` are built into iscsiadm; an offload port's record
is named ``<transport>.<hwaddress>``::

    manager = IfaceManager()
    name = manager.ensure_iface("cxgb4i", "00:07:43:28:b2:58")   # 'cxgb4i.00:07:43:28:b2:58'
    manager.unusable_reason(name)          # None, or why sessions cannot use it now

Every iscsiadm call goes through hvplug.initiator.iscsiadm.Iscsiadm, with
the injected ``execute`` and a bounded ``timeout``.  With ``dry_run=True``
the commands that write records are collected in ``writes`` instead of
being run; the reads the plan depends on (``iscsiadm -m iface``, ``-o
show``) still run.  Mind that iscsiadm itself,
on every ``-m iface`` call, writes the default records of offload hosts it
finds (open-iscsi's ``iface_setup_host_bindings``): that is iscsiadm's doing
and happens with or without hvplug.
"""

# IfaceManager.list shadows the builtin in later annotations: keep them unevaluated.
from __future__ import annotations

import builtins
import dataclasses
import ipaddress as ipaddr
import re
from typing import Any

from hvplug import exception
from hvplug.initiator.hardware import (
    KERNEL_MODULES,
    OFFLOAD_VENDORS,
    TRANSPORTS,
    Hardware,
)
from hvplug.initiator.iscsiadm import Iscsiadm

DEFAULT_IFACE = "default"
SPECIAL_IFACES = ("default", "iser")  # iscsiadm refuses to modify or delete them
EMPTY = "<empty>"
# iface record keys, in the order hvplug writes them (transport first: the
# other keys are checked against the record's transport).
FIELDS = {"transport": "iface.transport_name", "hwaddress": "iface.hwaddress",
          "ipaddress": "iface.ipaddress", "net_ifacename": "iface.net_ifacename",
          "initiatorname": "iface.initiatorname"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")  # iscsiadm: 1..64 chars, a file name
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$|^[0-9a-f]{2}(:[0-9a-f]{2}){19}$")  # Ethernet, IPoIB
_NETDEV = re.compile(r"^[^\s/:]{1,15}$")

# iscsiadm exit codes (open-iscsi usr/iscsi_err.h) that are an answer rather
# than a failure, and only for the command named:
#   6  ISCSI_ERR_IDBM   `-m iface -I NAME -o show`: no record file NAME (2.1.8:
#                       "Failed to open /etc/iscsi/ifaces/NAME ... No such file").
ISCSI_ERR_IDBM = 6
DEFAULT_TIMEOUT = 30.0  # iface commands only read/write files under /etc/iscsi (and wait on its lock)


@dataclasses.dataclass(frozen=True)
class Iface:
    """One iface record; ``None`` where iscsiadm prints ``<empty>``."""

    name: str
    transport: str
    hwaddress: str | None = None
    ipaddress: str | None = None
    net_ifacename: str | None = None
    initiatorname: str | None = None
    record: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in ("name", *FIELDS)}


def check_transport(transport: str) -> str:
    if transport not in TRANSPORTS:
        raise exception.InvalidInput(
            reason=f"unknown iSCSI transport {transport!r} (known: {', '.join(TRANSPORTS)})")
    return transport


def check_hwaddress(hwaddress: str) -> str:
    mac = hwaddress.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise exception.InvalidInput(
            reason=f"hwaddress {hwaddress!r} is not a MAC address such as 00:07:43:28:b2:58")
    return mac


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise exception.InvalidInput(
            reason=f"iface name {name!r}: use 1 to 64 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit")
    return name


def _check_field(key: str, value: str) -> str:
    if key == "transport":
        return check_transport(value)
    if key == "hwaddress":
        return check_hwaddress(value)
    if key == "ipaddress":
        try:
            return str(ipaddr.ip_address(value))
        except ValueError:
            raise exception.InvalidInput(
                reason=f"ipaddress {value!r} is not an IPv4 or IPv6 address") from None
    if key == "net_ifacename" and not _NETDEV.match(value):
        raise exception.InvalidInput(reason=f"net_ifacename {value!r} is not a network device name")
    if key not in FIELDS:
        raise exception.InvalidInput(
            reason=f"unknown iface field {key!r} (known: {', '.join(FIELDS)})")
    return value


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", EMPTY) else text


def parse_listing(text: str) -> list[Iface]:
    """``iscsiadm -m iface`` lines: ``name transport,hwaddress,ipaddress,net_ifacename,initiatorname``."""
    ifaces = []
    for line in text.splitlines():
        name, _, rest = line.strip().partition(" ")
        values = rest.split(",", 4)
        if not name or len(values) != 5:
            continue
        transport, hwaddress, ip, netdev, iname = (_value(v) for v in values)
        ifaces.append(Iface(name, transport or "tcp", hwaddress, ip, netdev, iname))
    return ifaces


def parse_record(name: str, text: str) -> Iface:
    """``iscsiadm -m iface -I NAME -o show``: ``# BEGIN RECORD``, ``key = value`` lines."""
    record = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and not key.startswith("#"):
            record[key.strip()] = value.strip()
    fields: dict[str, Any] = {key: _value(record.get(iscsi_key, ""))
                              for key, iscsi_key in FIELDS.items()}
    fields["transport"] = fields["transport"] or "tcp"
    return Iface(name=name, record=record, **fields)


def differences(current: Iface, wanted: Iface) -> list[str]:
    """Fields set in both records to different values; fields either leaves unset are free."""
    found = []
    for key in FIELDS:
        want, have = getattr(wanted, key), getattr(current, key)
        if want is not None and have is not None and have.lower() != want.lower():
            found.append(f"{key} {have} (wanted {want})")
    return found


def missing_fields(current: Iface, wanted: Iface) -> dict[str, str]:
    """Fields ``wanted`` sets that ``current`` leaves unset (or sets differently)."""
    return {key: getattr(wanted, key) for key in FIELDS
            if getattr(wanted, key) is not None
            and (getattr(current, key) or "").lower() != getattr(wanted, key).lower()}


class IfaceManager:
    """iface records through ``iscsiadm -m iface``; hardware checks through sysfs."""

    def __init__(self, execute=None, sysfs_root: str = "/sys", dry_run: bool = False,
                 timeout: float = DEFAULT_TIMEOUT):
        # execute=None: the executor's, looked up at each call
        self.iscsiadm = Iscsiadm(execute, timeout)
        self.hardware = Hardware(sysfs_root)
        self.dry_run = dry_run
        # every command that writes a record, in order: run, or in dry-run only recorded
        self.writes: list[tuple[str, ...]] = []

    @property
    def timeout(self) -> float:
        return self.iscsiadm.timeout

    # -- iscsiadm: reads through Iscsiadm.run, writes through _write_cmd ----
    def _write_cmd(self, *args: str) -> None:
        """Run ``iscsiadm ARGS``, a command that writes a record.

        It is recorded in ``writes``; in dry-run it is not run.  A failure
        raises ProcessExecutionError.
        """
        self.writes.append(("iscsiadm", *args))
        if not self.dry_run:
            self.iscsiadm.run(*args)

    def _iface_op(self, name: str, action: str, *args: str, transport: str | None = None) -> None:
        """A mutating ``-m iface -I NAME`` command; failures become IfaceCommandFailed.

        ``transport``: the record's transport when iscsiadm needs its kernel
        module for the command (``-o update`` does; ``-o new``/``-o delete`` do not).
        """
        try:
            self._write_cmd("-m", "iface", "-I", name, *args)
        except exception.ProcessExecutionError as exc:
            raise exception.IfaceCommandFailed(
                action=action, name=name, reason=self._explain(exc, transport)) from None

    def _explain(self, exc: exception.ProcessExecutionError, transport: str | None) -> str:
        lines = [line for line in exc.stderr.splitlines() if line.strip()]
        reason = f"{lines[-1] if lines else 'no message'} (exit {exc.kwargs.get('status')})"
        if transport and not self.hardware.transport_loaded(transport):
            module = KERNEL_MODULES.get(transport, f"the {transport} driver")
            reason += (f"; the kernel iSCSI transport '{transport}' is not loaded and iscsiadm "
                       f"needs it to change a record: load it ('modprobe {module}') and retry")
        return reason

    # -- reading ------------------------------------------------------------
    def list(self) -> list[Iface]:
        _status, out = self.iscsiadm.run("-m", "iface")
        return parse_listing(out)

    def show(self, name: str) -> Iface | None:
        status, out = self.iscsiadm.run("-m", "iface", "-I", check_name(name), "-o", "show",
                                        ok=(ISCSI_ERR_IDBM,))
        return None if status == ISCSI_ERR_IDBM else parse_record(name, out)

    # -- writing ------------------------------------------------------------
    def spec(self, transport: str, hwaddress: str | None = None, ipaddress: str | None = None,
             net_ifacename: str | None = None, name: str | None = None) -> Iface:
        """A checked, normalised record (nothing runs); InvalidInput (exit 2) if malformed."""
        if transport == DEFAULT_IFACE:
            raise exception.InvalidInput(
                reason="'default' is iscsiadm's built-in software iface and needs no record; "
                "use transport 'tcp' for a record of your own")
        transport = check_transport(transport)
        given = (("hwaddress", hwaddress), ("ipaddress", ipaddress),
                 ("net_ifacename", net_ifacename))
        fields: dict[str, Any] = {key: _check_field(key, value) for key, value in given
                                  if value is not None}
        if transport in OFFLOAD_VENDORS and "hwaddress" not in fields:
            raise exception.InvalidInput(
                reason=f"an {transport} iface needs --hwaddress (the adapter's MAC; "
                "'iscsiadm -m host -P 1' lists them)")
        if name is None:
            if "hwaddress" not in fields:
                raise exception.InvalidInput(
                    reason="give a hwaddress (the record is named <transport>.<hwaddress>) "
                    "or a name")
            name = f"{transport}.{fields['hwaddress']}"
        if check_name(name) in SPECIAL_IFACES:
            raise exception.InvalidInput(
                reason=f"'{name}' is built into iscsiadm and cannot be created or changed")
        return Iface(name=name, transport=transport, **fields)

    def create(self, name: str, transport: str, hwaddress: str | None = None,
               ipaddress: str | None = None, net_ifacename: str | None = None) -> Iface:
        """Write a new record; IfaceConflict if ``name`` exists (``-o new`` would reset it)."""
        wanted = self.spec(transport, hwaddress, ipaddress, net_ifacename, name=name)
        self.verify_hardware(wanted.transport, wanted.hwaddress)
        current = self.show(wanted.name)
        if current is not None:
            difference = "; ".join(f"{key} {getattr(current, key) or EMPTY} (wanted {value})"
                                   for key, value in missing_fields(current, wanted).items())
            raise exception.IfaceConflict(
                name=wanted.name, difference=difference or "the same settings (nothing to create)")
        self._write(wanted)
        return wanted

    def _write(self, iface: Iface) -> None:
        """``-o new`` then one ``-o update`` per field; on failure remove the half record."""
        self._iface_op(iface.name, "create", "-o", "new")
        current = "tcp"  # what `-o new` writes (captured from open-iscsi 2.1.8)
        try:
            for key, iscsi_key in FIELDS.items():
                value = getattr(iface, key)
                if value is None or (key == "transport" and value == current):
                    continue
                self._iface_op(iface.name, f"set {iscsi_key} of", "-o", "update",
                               "-n", iscsi_key, "-v", value, transport=current)
                current = iface.transport if key == "transport" else current
        except exception.IfaceCommandFailed as exc:
            raise exception.IfaceCommandFailed(
                message=f"{exc.message}. {self._remove_half(iface.name)}") from None

    def _remove_half(self, name: str) -> str:
        try:
            self._write_cmd("-m", "iface", "-I", name, "-o", "delete")
        except exception.ProcessExecutionError as exc:
            return (f"The half-written record could not be removed ({exc.stderr.strip()}); "
                    f"remove it with 'iscsiadm -m iface -I {name} -o delete'.")
        return "The half-written record was removed."

    def update(self, name: str, **fields: str) -> Iface:
        """Set record fields (``transport``, ``hwaddress``, ``ipaddress``, ...).

        One ``-o update`` per changed field, transport first; a failure keeps
        the fields changed before it (the error names the one that failed).
        """
        if check_name(name) in SPECIAL_IFACES:
            raise exception.InvalidInput(reason=f"'{name}' is built into iscsiadm and cannot be "
                                         "changed; create a record of your own")
        changes: dict[str, Any] = {key: _check_field(key, value)
                                   for key, value in fields.items() if value is not None}
        current = self.show(name)
        if current is None:
            raise exception.IfaceNotFound(name=name)
        result = dataclasses.replace(current, **changes)
        if result.transport in OFFLOAD_VENDORS or result.transport == "iser":
            self.verify_hardware(result.transport, result.hwaddress)
        self._apply(current, changes)
        return result

    def _apply(self, current: Iface, changes: dict[str, str]) -> None:
        """``-o update`` each changed field, transport first."""
        name, transport = current.name, current.transport
        for key, iscsi_key in FIELDS.items():
            if key in changes and (getattr(current, key) or "").lower() != changes[key].lower():
                self._iface_op(name, f"set {iscsi_key} of", "-o", "update", "-n", iscsi_key,
                               "-v", changes[key], transport=transport)
                transport = changes[key] if key == "transport" else transport

    def delete(self, name: str) -> bool:
        """Remove a record; False if there was none.

        iscsiadm also logs out the sessions bound to it and deletes their
        node records.
        """
        if check_name(name) in SPECIAL_IFACES:
            raise exception.InvalidInput(
                reason=f"'{name}' is built into iscsiadm and cannot be deleted")
        if self.show(name) is None:
            return False
        self._iface_op(name, "delete", "-o", "delete")
        return True

    def ensure(self, transport: str, hwaddress: str | None = None,
               ipaddress: str | None = None, net_ifacename: str | None = None, *,
               name: str | None = None, update: bool = False,
               verify: bool = True) -> tuple[str, str]:
        """Like ensure_iface; also says what happened: created, reused or updated.

        ``verify=False`` skips the hardware check (``hvplug iface create
        --dry-run`` reports it beside the plan instead).
        """
        wanted = self.spec(transport, hwaddress, ipaddress, net_ifacename, name=name)
        if verify:
            self.verify_hardware(wanted.transport, wanted.hwaddress)
        current = self.show(wanted.name)
        if current is None:
            self._write(wanted)
            return wanted.name, "created"
        found = differences(current, wanted)
        if found and not update:
            raise exception.IfaceConflict(name=wanted.name, difference="; ".join(found))
        changes = missing_fields(current, wanted)
        if not changes:
            return wanted.name, "reused"
        self._apply(current, changes)
        return wanted.name, "updated"

    def ensure_iface(self, transport: str, hwaddress: str | None,
                     ipaddress: str | None = None, net_ifacename: str | None = None, *,
                     name: str | None = None, update: bool = False) -> str:
        """The record ``<transport>.<hwaddress>`` (or ``name``): created, or reused if it matches.

        An existing record's unset fields are filled in (iscsiadm writes
        ``<transport>.<hwaddress>`` for every offload host itself, without
        ipaddress); a field set to another value raises IfaceConflict naming
        the difference, unless ``update`` (then it is changed).  Fields given
        as None are not compared.  Offload hardware is verified first
        (IfaceHardwareNotFound).
        """
        return self.ensure(transport, hwaddress, ipaddress, net_ifacename,
                           name=name, update=update)[0]

    def generate(self) -> builtins.list[str]:
        """Records for every offload host sysfs shows; their names.

        ``iscsiadm -m iface`` writes these itself as it lists; whatever it
        did not write (an older iscsiadm, a host it could not match) hvplug
        writes the same way.
        """
        present = {iface.name for iface in self.list()}
        records = self.hardware.offload_records()
        for rec in records:
            if rec["name"] not in present:
                self._write(Iface(rec["name"], rec["transport"], rec["hwaddress"],
                                  rec.get("ipaddress")))
        return [rec["name"] for rec in records]

    # -- hardware -----------------------------------------------------------
    def verify_hardware(self, transport: str, hwaddress: str | None) -> str:
        """What ``transport`` at ``hwaddress`` runs on; IfaceHardwareNotFound if nothing.

        Offload transports: an iscsi_host with that hwaddress, else a NIC
        with that MAC from the transport's PCI vendor.  iser: an RDMA device.
        tcp/default: nothing needed.  MACs compare case-insensitively.
        """
        if transport != DEFAULT_IFACE:
            check_transport(transport)
        return self.hardware.find(transport, check_hwaddress(hwaddress) if hwaddress else None)

    def unusable_reason(self, name: str) -> str | None:
        """None when sessions can use iface ``name`` now, else why not (for the fallback)."""
        if name in ("", DEFAULT_IFACE):
            return None
        try:
            iface = self.show(name)
        except exception.InvalidInput as exc:
            return exc.message
        if iface is None:
            return (f"there is no iface record '{name}' (create it with 'hvplug iface create' "
                    "or 'iscsiadm -m iface -I NAME -o new')")
        return self.record_problem(iface)

    def record_problem(self, iface: Iface) -> str | None:
        """Why an existing record cannot be used now, or None."""
        if iface.transport not in TRANSPORTS:
            return (f"iface '{iface.name}' has transport '{iface.transport}', which hvplug does "
                    f"not know (known: {', '.join(TRANSPORTS)})")
        if iface.transport == "tcp":
            return None
        try:
            self.hardware.find(iface.transport, iface.hwaddress)
        except exception.IfaceHardwareNotFound as exc:
            return f"iface '{iface.name}': {exc.message}"
        return None
