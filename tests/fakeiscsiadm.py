"""A recording, stateful stand-in for ``iscsiadm`` (open-iscsi 2.1.8).

Called exactly like ``hvplug.utils.executor.execute`` (``*cmd, check_exit_code,
timeout, input, secrets``): answers with iscsiadm's output and exit status,
raises ProcessExecutionError for a status outside ``check_exit_code`` (stderr
masked with ``secrets``), and keeps the state the real tool keeps -- iface
records, discovery and node records, sessions -- plus the block devices a
login makes.  Formats were captured from the real iscsiadm 2.1.8 (iface
listing, ``-o show``, every iface error) or taken from open-iscsi's source
(login/logout/session lines; this machine has no kernel transport to log in
with).  A command it does not know raises NotImplementedError naming it:
extend the fake, do not work around it.

Set-up::

    fake = FakeIscsiadm(sysfs_root=sysfs.root, dev_root=tmp_path / "dev")
    target = fake.add_target("iqn.2010-10.org.openstack:volume-1",
                             portals=["10.0.0.1:3260", "10.0.0.2:3260"], luns=(1,),
                             chap=("user", "pw"), chap_in=None)   # chap_in: mutual CHAP
    IfaceManager(execute=fake, sysfs_root=str(sysfs.root))       # or any driver's execute=

What it emulates:

- ``-m iface`` [``-I NAME`` ``-o show|new|update|delete``, ``-n K -v V``]: listing
  ``name transport,hwaddress,ipaddress,net_ifacename,initiatorname`` (``<empty>``);
  ``default``/``iser`` built in and refused for update/delete (exit 7); ``-o new``
  on an existing record resets it (the real tool does); show of a missing record
  exits 6; ``-o update`` needs the record's kernel transport (``kernel_transports``;
  default: all loaded) else exits 7 as on a host without modules; every ``-m iface``
  first writes ``<transport>.<hwaddress>`` records for offload iscsi_hosts under
  ``sysfs_root`` (open-iscsi's host bindings; ``host_bindings=False`` turns it off).
- ``-m discovery -t st -p IP:PORT [-I IFACE]...`` and ``-m discoverydb ... -o new|update
  [--discover]``: prints ``IP:PORT,TPGT IQN`` for every portal of every target that
  lists IP:PORT, once per iface, and writes node records bound to each iface.
  Without ``-I`` it binds like iscsiadm: every tcp iface record except ``default``,
  or ``default`` if there is none.  Unknown portal: exit 4.  Discovery CHAP
  (``add_target(discovery_chap=...)``) is checked against the discoverydb record.
- ``-m node [-T IQN] [-p P] [-I IFACE]`` with ``--login``, ``--logout``, ``-o new|update|
  delete|show``, ``-R``; ``-m node`` lists ``IP:PORT,TPGT IQN``.  No record: exit 21;
  missing iface record: exit 3 ("Could not read iface info", as 2.1.8 does).
  Login checks one-way CHAP (``node.session.auth.{authmethod,username,password}``,
  else exit 24) and mutual CHAP (``username_in``/``password_in``, else exit 19), and
  that the iface's kernel transport is loaded (else exit 12).  Already logged in: exit
  0, no new session.  Deleting a node record in use: exit 15.
- ``-m session`` lines ``TRANSPORT: [SID] IP:PORT,TPGT IQN (non-flash)`` (no session:
  exit 21), a trimmed ``-P 3`` (iface, SID, state, attached disks), ``-m session -r SID
  -R|-u``, ``-m session -R``.
- ``-m host``: ``TRANSPORT: [N] IP,[HW],NETDEV INAME`` from ``sysfs_root``.

Devices (``dev_root``): a login makes ``dev_root/sdX`` and the udev link
``dev_root/disk/by-path/ip-IP:PORT-iscsi-IQN-lun-N -> ../../sdX``; for offload
and iSER sessions the link is ``pci-0000:05:00.4-ip-...`` (udev names hosts
that sit on a PCI device by their PCI path, so a driver must glob
``*ip-...`` for them).  ``add_target(devices_after_rescans=N)`` delays the
devices until N rescans (``-R``) of the session; logout removes them.
``device_path(portal, iqn, lun, transport)`` is where a device is (or would be).
With ``sysfs_root`` a session also shows as
``class/iscsi_session/sessionN/{ifacename,targetname}`` and each disk as
``block/sdX/{size,device/,holders/}`` (size in 512-byte sectors of
``Target.size``; after ``target.size = N`` a rescan updates it, as the
kernel does).

Faults::

    fake.hang("login", iqn=None, times=1)     # raises what the executor raises when
                                              # `timeout` runs out; asserts one was given
    fake.fail("login", 24, iqn=None)          # "iscsiadm: Could not login to [...]" /
                                              # "initiator reported error (24 - iSCSI login
                                              #  failed due to authorization failure)"
    fake.fail("discovery", 4, stderr="...")   # any action, any status, own stderr
    fake.kernel_transports = {"tcp"}          # offload/iser logins now exit 12

Actions: ``login``, ``logout``, ``discovery``, ``rescan``, ``session`` (listing),
``node-new``, ``node-update``, ``node-delete``, ``node-show``, ``iface-new``,
``iface-update``, ``iface-delete``, ``iface-show``, ``iface-list``, ``host``.
``times=None`` repeats forever.

Every call must carry a finite ``timeout`` (the default 60 s counts), and a
value set for a ``*password*`` key must be named in ``secrets`` (AssertionError
otherwise).  Records: ``calls`` (argv tuples), ``call_kwargs``,
``transcript()`` (one string per call, secrets as ``***``), ``timeouts``
(the timeout of each hung call).
"""

import dataclasses
import math
import os
import shutil
from pathlib import Path

from hvplug import exception
from hvplug.utils.masking import redact

EMPTY = "<empty>"
VERSION = "2.1.8"
ERRORS = {  # open-iscsi usr/iscsi_err.c
    3: "no available memory", 4: "encountered connection failure",
    5: "encountered iSCSI login failure", 6: "encountered iSCSI database failure",
    7: "invalid parameter", 8: "connection timed out",
    12: "iSCSI driver not found. Please make sure it is loaded, and retry the operation",
    15: "session exists", 19: "encountered non-retryable iSCSI login failure",
    21: "no objects found", 24: "iSCSI login failed due to authorization failure",
}
TRANSPORTS = ("tcp", "iser", "cxgb3i", "cxgb4i", "qla4xxx", "bnx2i", "be2iscsi", "ocs", "qedi")
MODULES = {"tcp": "iscsi_tcp", "iser": "ib_iser"}
# `iscsiadm -m iface -I default -o show` on 2.1.8, verbatim between BEGIN and END RECORD.
DEFAULT_RECORD = dict(line.split(" = ") for line in """\
iface.iscsi_ifacename = default
iface.net_ifacename = <empty>
iface.ipaddress = <empty>
iface.prefix_len = 0
iface.hwaddress = <empty>
iface.transport_name = tcp
iface.initiatorname = <empty>
iface.state = <empty>
iface.vlan_id = 0
iface.vlan_priority = 0
iface.vlan_state = <empty>
iface.iface_num = 0
iface.mtu = 0
iface.port = 0
iface.bootproto = <empty>
iface.subnet_mask = <empty>
iface.gateway = <empty>
iface.dhcp_alt_client_id_state = <empty>
iface.dhcp_alt_client_id = <empty>
iface.dhcp_dns = <empty>
iface.dhcp_learn_iqn = <empty>
iface.dhcp_req_vendor_id_state = <empty>
iface.dhcp_vendor_id_state = <empty>
iface.dhcp_vendor_id = <empty>
iface.dhcp_slp_da = <empty>
iface.fragmentation = <empty>
iface.gratuitous_arp = <empty>
iface.incoming_forwarding = <empty>
iface.tos_state = <empty>
iface.tos = 0
iface.ttl = 0
iface.delayed_ack = <empty>
iface.tcp_nagle = <empty>
iface.tcp_wsf_state = <empty>
iface.tcp_wsf = 0
iface.tcp_timer_scale = 0
iface.tcp_timestamp = <empty>
iface.redirect = <empty>
iface.def_task_mgmt_timeout = 0
iface.header_digest = <empty>
iface.data_digest = <empty>
iface.immediate_data = <empty>
iface.initial_r2t = <empty>
iface.data_seq_inorder = <empty>
iface.data_pdu_inorder = <empty>
iface.erl = 0
iface.max_receive_data_len = 0
iface.first_burst_len = 0
iface.max_outstanding_r2t = 0
iface.max_burst_len = 0
iface.chap_auth = <empty>
iface.bidi_chap = <empty>
iface.strict_login_compliance = <empty>
iface.discovery_auth = <empty>
iface.discovery_logout = <empty>
""".splitlines())
NODE_DEFAULTS = {"node.startup": "manual", "node.session.auth.authmethod": "None",
                 "node.session.auth.username": EMPTY, "node.session.auth.password": EMPTY,
                 "node.session.auth.username_in": EMPTY, "node.session.auth.password_in": EMPTY,
                 "node.session.scan": "auto", "node.session.nr_sessions": "1"}
OPTIONS = {"-m": "mode", "--mode": "mode", "-p": "portal", "--portal": "portal",
           "-T": "targetname", "--targetname": "targetname", "-I": "interface",
           "--interface": "interface", "-o": "op", "--op": "op", "-t": "type", "--type": "type",
           "-n": "name", "--name": "name", "-v": "value", "--value": "value", "-r": "sid",
           "--sid": "sid", "-P": "print", "--print": "print", "-H": "host", "--host": "host",
           "-d": "debug", "--debug": "debug"}
FLAGS = {"-l": "login", "--login": "login", "-u": "logout", "--logout": "logout",
         "-R": "rescan", "--rescan": "rescan", "-D": "discover", "--discover": "discover",
         "-S": "show", "--show": "show"}


@dataclasses.dataclass
class Target:
    iqn: str
    portals: list[str]
    tpgt: int = 1
    luns: tuple[int, ...] = (1,)
    chap: tuple[str, str] | None = None
    chap_in: tuple[str, str] | None = None
    discovery_chap: tuple[str, str] | None = None
    devices_after_rescans: int = 0
    size: int = 1 << 30  # bytes; set it to grow the LUN, a rescan shows it


@dataclasses.dataclass
class Session:
    sid: int
    target: Target
    portal: str
    iface: str
    transport: str
    hwaddress: str | None
    rescans: int = 0
    devices: dict = dataclasses.field(default_factory=dict)  # lun -> "sdb"


def split_portal(text: str) -> str:
    """``IP[:PORT][,TPGT]`` or ``[IPv6]:PORT`` -> ``IP:PORT`` (port 3260 by default)."""
    text = text.split(",")[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return f"[{host}]:{rest[1:] or 3260}"
    host, _, port = text.partition(":") if text.count(":") == 1 else (text, "", "")
    return f"{host}:{port or 3260}"


class Call:
    """One parsed command line."""

    def __init__(self, argv: tuple[str, ...]):
        self.argv, self.opts, self.flags, self.params, self.ifaces = argv, {}, set(), [], []
        args = list(argv[1:])
        while args:
            arg = args.pop(0)
            key, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            if key in FLAGS:
                self.flags.add(FLAGS[key])
                continue
            if key not in OPTIONS:
                raise NotImplementedError(f"fake iscsiadm: unknown argument {arg!r} in {argv}")
            value = inline if eq else args.pop(0)
            name = OPTIONS[key]
            if name == "interface":
                self.ifaces.append(value)
            elif name == "value":
                self.params.append((self.opts.pop("name"), value))
            else:
                self.opts[name] = value

    def get(self, key: str) -> str | None:
        return self.opts.get(key)


class FakeIscsiadm:
    def __init__(self, sysfs_root=None, dev_root=None, *, kernel_transports=None,
                 host_bindings: bool = True, pci_address: str = "0000:05:00.4",
                 initiator: str = "iqn.1993-08.org.debian:01:fake"):
        self.sysfs = Path(sysfs_root) if sysfs_root else None
        self.dev = Path(dev_root) if dev_root else None
        self.kernel_transports = set(TRANSPORTS if kernel_transports is None else kernel_transports)
        self.host_bindings = host_bindings
        self.pci_address = pci_address
        self.initiator = initiator
        self.ifaces: dict[str, dict] = {}
        self.targets: list[Target] = []
        self.nodes: dict[tuple[str, str, str], dict] = {}  # (iqn, portal, iface) -> record
        self.discoverydb: dict[tuple[str, str], dict] = {}  # (portal, iface) -> record
        self.sessions: list[Session] = []
        self.calls: list[tuple[str, ...]] = []
        self.call_kwargs: list[dict] = []
        self.timeouts: list[float] = []
        self._faults: list[dict] = []
        self._secrets: set[str] = set()
        self._next_sid, self._next_disk = 1, 1

    # -- set-up and faults -----------------------------------------------------
    def add_target(self, iqn: str, portals=("127.0.0.1:3260",), **kwargs) -> Target:
        target = Target(iqn, [split_portal(p) for p in portals], **kwargs)
        self.targets.append(target)
        return target

    def hang(self, action: str, iqn: str | None = None, times: int | None = 1) -> None:
        self._faults.append({"action": action, "iqn": iqn, "times": times, "hang": True})

    def fail(self, action: str, status: int, iqn: str | None = None, times: int | None = 1,
             stderr: str | None = None, stdout: str = "") -> None:
        self._faults.append({"action": action, "iqn": iqn, "times": times, "hang": False,
                             "status": status, "stderr": stderr, "stdout": stdout})

    def device_path(self, portal: str, iqn: str, lun: int, transport: str = "tcp") -> Path:
        prefix = "" if transport == "tcp" else f"pci-{self.pci_address}-"
        return self.dev / "disk" / "by-path" / f"{prefix}ip-{split_portal(portal)}-iscsi-{iqn}-lun-{lun}"

    def transcript(self) -> list[str]:
        return [redact(" ".join(argv), sorted(self._secrets)) for argv in self.calls]

    # -- the executor's contract -----------------------------------------------
    def __call__(self, *cmd: str, check_exit_code=(0,), timeout: float = 60.0, input=None,
                 secrets=()):
        assert cmd and cmd[0] == "iscsiadm", f"FakeIscsiadm got {cmd}"
        assert timeout is not None and 0 < timeout < math.inf, f"unbounded wait: {cmd}"
        self.calls.append(tuple(cmd))
        self.call_kwargs.append({"check_exit_code": check_exit_code, "timeout": timeout,
                                 "secrets": tuple(secrets)})
        call = Call(tuple(cmd))
        for key, value in call.params:
            if "password" in key and value not in (EMPTY, ""):
                assert value in secrets, f"password of {key} not named in secrets= of {cmd}"
                self._secrets.add(value)
        status, out, err = self._fault(call, timeout) or self._dispatch(call)
        if status not in check_exit_code:
            raise exception.ProcessExecutionError(
                cmd=" ".join(cmd[:2]), status=status, stdout=out,
                stderr=redact(err.strip(), list(secrets)))
        return out, err

    def _fault(self, call: Call, timeout: float):
        action = self._action(call)
        for fault in self._faults:
            if fault["action"] != action or fault["times"] == 0:
                continue
            if fault["iqn"] not in (None, call.get("targetname")):
                continue
            if fault["times"] is not None:
                fault["times"] -= 1
            if fault["hang"]:
                self.timeouts.append(timeout)
                raise exception.ProcessTimeout(
                    cmd="iscsiadm", status="-", stderr=f"no answer within {timeout} s",
                    timeout=timeout)
            stdout, stderr = fault["stdout"], fault["stderr"]
            if action == "login":
                where = self._where(call)
                stdout = stdout or f"Logging in to {where}\n"
                stderr = stderr or (
                    f"iscsiadm: Could not login to {where}.\niscsiadm: initiator reported error "
                    f"({fault['status']} - {ERRORS.get(fault['status'], 'error')})\n"
                    "iscsiadm: Could not log into all portals\n")
            return fault["status"], stdout, stderr or \
                f"iscsiadm: {ERRORS.get(fault['status'], 'error')}\n"
        return None

    @staticmethod
    def _where(call: Call) -> str:
        iface = call.ifaces[0] if call.ifaces else "default"
        portal = _comma(split_portal(call.get("portal") or ""))
        return f"[iface: {iface}, target: {call.get('targetname')}, portal: {portal}]"

    @staticmethod
    def _action(call: Call) -> str:
        mode, op = call.get("mode"), call.get("op")
        if mode in ("discovery", "discoverydb") and (mode == "discovery" or "discover" in call.flags):
            return "discovery"
        for flag in ("login", "logout", "rescan"):
            if flag in call.flags:
                return flag
        if mode in ("node", "iface"):
            return f"{mode}-{op or ('show' if call.ifaces or call.get('targetname') else 'list')}"
        return mode or "?"

    def _dispatch(self, call: Call):
        handler = getattr(self, f"_mode_{(call.get('mode') or '?').replace('-', '_')}", None)
        if handler is None:
            raise NotImplementedError(f"fake iscsiadm: mode of {call.argv}")
        return handler(call)

    # -- -m iface --------------------------------------------------------------
    def _iface_record(self, name: str) -> dict | None:
        if name in ("default", "iser"):
            record = {k[6:]: v for k, v in DEFAULT_RECORD.items()}
            record.update(iscsi_ifacename=name, transport_name="tcp" if name == "default" else name)
            return record
        return self.ifaces.get(name)

    def new_iface(self, name: str, **fields: str) -> dict:
        record = {k[6:]: v for k, v in DEFAULT_RECORD.items()}
        record.update(iscsi_ifacename=name, **fields)
        self.ifaces[name] = record
        return record

    def _host_bindings(self) -> None:
        if not (self.host_bindings and self.sysfs):
            return
        for host_dir in sorted((self.sysfs / "class" / "iscsi_host").glob("host*")):
            proc = _read(self.sysfs / "class" / "scsi_host" / host_dir.name / "proc_name")
            transport = (proc or "").removeprefix("iscsi_")
            hwaddress = _read(host_dir / "hwaddress")
            if transport in ("", "tcp", "iser") or not hwaddress:
                continue
            number = host_dir.name[4:]
            kern = sorted(p.name for p in (self.sysfs / "class" / "iscsi_iface").glob(
                f"ipv*-iface-{number}-*"))
            names = [f"{transport}.{hwaddress}.{k[:4]}.{k.rsplit('-', 1)[1]}" for k in kern]
            for name in names or [f"{transport}.{hwaddress}"]:
                if name not in self.ifaces:
                    self.new_iface(name, transport_name=transport, hwaddress=hwaddress)

    def _mode_iface(self, call: Call):
        self._host_bindings()
        op = call.get("op") or "show"
        if not call.ifaces:
            if op != "show":
                return 7, "", "iscsiadm: Could not add interface. No interface passed in.\n"
            names = [*sorted(self.ifaces), "default", "iser"]
            return 0, "".join(self._iface_line(self._iface_record(n)) for n in names), ""
        name = call.ifaces[0]
        handler = getattr(self, f"_iface_{op}", None)
        if handler is None:
            return 7, "", f"iscsiadm: can not recognize operation: '{op}'\n"
        return handler(name, call)

    @staticmethod
    def _iface_line(rec: dict) -> str:
        return (f"{rec['iscsi_ifacename']} {rec['transport_name']},{rec['hwaddress']},"
                f"{rec['ipaddress']},{rec['net_ifacename']},{rec['initiatorname']}\n")

    def _iface_show(self, name, call):
        rec = self._iface_record(name)
        if rec is None:
            return 6, "", (f"iSCSI ERROR: Failed to open /etc/iscsi/ifaces/{name} using read "
                           "mode: 2 No such file or directory # idbm.c:_idbm_recs_read():834\n")
        body = "".join(f"iface.{key} = {value}\n" for key, value in rec.items())
        return 0, f"# BEGIN RECORD {VERSION}\n{body}# END RECORD\n", ""

    def _iface_new(self, name, call):
        self.new_iface(name)  # resets an existing record, as iscsiadm does
        return 0, f"{name} updated.\nNew interface {name} added\n", ""

    def _iface_update(self, name, call):
        rec = self._iface_record(name)
        if rec is None:
            return 7, "", f"iscsiadm: Could not read iface info for {name}.\n"
        if rec["transport_name"] not in self.kernel_transports:
            transport = rec["transport_name"]
            return 7, "", (
                "iscsiadm: Could not scan /sys/class/iscsi_transport.\nlibkmod: ERROR "
                "../libkmod/libkmod-module.c:895 kmod_module_insert_module: could not find "
                f"module by name='{MODULES.get(transport, transport)}'\niscsiadm: Could not "
                f"insert module {transport}. Kmod error -2\niscsiadm: Cound not locate "
                f"transport for iface {name}\n")
        if name in ("default", "iser"):
            return 7, "", (f"iscsiadm: iface {name} is a special interface and cannot be "
                           f"modified.\niscsiadm: Could not update iface {name}: invalid "
                           "parameter\n")
        if not call.params:
            return 7, "", "iscsiadm: Update requires name, value, and iface.\n"
        for key, value in call.params:
            if not key.startswith("iface.") or key[6:] not in rec or key == "iface.iscsi_ifacename":
                return 7, "", f"iscsiadm: Could not update iface {name}: invalid parameter\n"
            rec[key[6:]] = value
        return 0, f"{name} updated.\n", ""

    def _iface_delete(self, name, call):
        if name in ("default", "iser"):
            return 7, "", (f"iscsiadm: iface {name} is a special interface and cannot be "
                           f"deleted.\niscsiadm: Could not delete iface {name}: invalid "
                           "parameter\n")
        if name not in self.ifaces:
            return 7, "", (f"iscsiadm: Could not read iface info for {name}.\niscsiadm: Could "
                           f"not delete iface {name}: invalid parameter\n")
        for session in [s for s in self.sessions if s.iface == name]:
            self._logout(session)
        self.nodes = {key: rec for key, rec in self.nodes.items() if key[2] != name}
        del self.ifaces[name]
        return 0, f"{name} unbound and deleted.\n", ""

    # -- -m discovery / discoverydb ---------------------------------------------
    def _bind_ifaces(self, call: Call) -> tuple[list[str], tuple | None]:
        for name in call.ifaces:
            if self._iface_record(name) is None:
                return [], (21, "", (f"iscsiadm: Could not read iface info for {name}. Make sure "
                                     f"an iface config with the file name and "
                                     f"iface.iscsi_ifacename {name} is in /etc/iscsi/ifaces.\n"))
        if call.ifaces:
            return call.ifaces, None
        tcp = sorted(n for n, r in self.ifaces.items() if r["transport_name"] == "tcp")
        return tcp or ["default"], None

    def _mode_discoverydb(self, call: Call):
        portal = split_portal(call.get("portal") or "")
        ifaces, error = self._bind_ifaces(call)
        if error:
            return error
        for iface in ifaces:
            record = self.discoverydb.setdefault((portal, iface), {})
            record.update(call.params)
        if "discover" not in call.flags:
            return 0, (f"New discovery record for [{_comma(portal)}] added.\n"
                       if call.get("op") == "new" else ""), ""
        return self._discover(portal, ifaces)

    def _mode_discovery(self, call: Call):
        if call.get("type") not in ("st", "sendtargets"):
            raise NotImplementedError(f"fake iscsiadm: discovery type of {call.argv}")
        ifaces, error = self._bind_ifaces(call)
        return error or self._discover(split_portal(call.get("portal") or ""), ifaces)

    def _discover(self, portal: str, ifaces: list[str]):
        found = [t for t in self.targets if portal in t.portals]
        if not found:
            host = portal.rpartition(":")[0]
            return 4, "", (f"iscsiadm: cannot make connection to {host}: Connection refused\n"
                           "iscsiadm: Could not perform SendTargets discovery: encountered "
                           "connection failure\n")
        for iface in ifaces:
            transport = self._iface_record(iface)["transport_name"]
            if transport not in self.kernel_transports:
                return 12, "", f"iscsiadm: Could not perform SendTargets discovery: {ERRORS[12]}\n"
            secret = next((t.discovery_chap for t in found if t.discovery_chap), None)
            if secret and not _chap_ok(self.discoverydb.get((portal, iface), {}),
                                       "discovery.sendtargets.auth", secret):
                return 24, "", (f"iscsiadm: Login failed to authenticate with target\n"
                                f"iscsiadm: Could not perform SendTargets discovery: {ERRORS[24]}\n")
        lines = []
        for iface in ifaces:
            for target in found:
                for tportal in target.portals:
                    key = (target.iqn, tportal, iface)
                    self.nodes.setdefault(key, {**NODE_DEFAULTS, "node.tpgt": str(target.tpgt)})
                    lines.append(f"{tportal},{target.tpgt} {target.iqn}\n")
        return 0, "".join(lines), ""

    # -- -m node -----------------------------------------------------------------
    def _matching_nodes(self, call: Call) -> list[tuple]:
        iqn, portal = call.get("targetname"), call.get("portal")
        portal = split_portal(portal) if portal else None
        return [key for key in self.nodes
                if (iqn is None or key[0] == iqn) and (portal is None or key[1] == portal)
                and (not call.ifaces or key[2] == call.ifaces[0])]

    def _mode_node(self, call: Call):
        for name in call.ifaces:
            if self._iface_record(name) is None:
                return 3, "", f"iscsiadm: Could not read iface info for {name}.\n"
        if call.get("op") == "new":
            return self._node_new(call)
        if "logout" in call.flags:
            return self._node_logout(call)
        keys = self._matching_nodes(call)
        if "rescan" in call.flags:
            return self._rescan([s for s in self.sessions
                                 if (s.target.iqn, s.portal, s.iface) in keys])
        if not keys:
            return 21, "", "iscsiadm: No records found\n"
        if "login" in call.flags:
            return self._node_login(call, keys)
        op = call.get("op") or ("show" if call.get("targetname") or call.ifaces else "list")
        if op == "list":
            return 0, "".join(f"{k[1]},{self.nodes[k]['node.tpgt']} {k[0]}\n" for k in keys), ""
        if op == "update":
            for key in keys:
                self.nodes[key].update(call.params)
            return 0, "", ""
        if op == "delete":
            return self._node_delete(keys)
        if op == "show":
            return 0, "".join(self._node_show(k, "show" in call.flags) for k in keys), ""
        return 7, "", f"iscsiadm: can not recognize operation: '{op}'\n"

    def _node_new(self, call: Call):
        iqn, portal = call.get("targetname"), split_portal(call.get("portal") or "")
        iface = call.ifaces[0] if call.ifaces else "default"
        self.nodes[(iqn, portal, iface)] = {**NODE_DEFAULTS, "node.tpgt": "-1"}
        rec = self._iface_record(iface)
        ip = portal.rpartition(":")
        return 0, (f"New iSCSI node [{rec['transport_name']}:[hw=,ip=,net_if=,iscsi_if={iface}] "
                   f"{ip[0]},{ip[2]},-1 {iqn}] added\n"), ""

    def _node_delete(self, keys: list[tuple]):
        for key in keys:
            if any((s.target.iqn, s.portal, s.iface) == key for s in self.sessions):
                where = f"[{key[0]}, {_comma(key[1])}]"
                return 15, "", (f"iscsiadm: This command will remove the record {where}, but a "
                                "session is using it. Logout session then rerun command to "
                                "remove record.\n")
        for key in keys:
            del self.nodes[key]
        return 0, "", ""

    def _node_show(self, key: tuple, show_secrets: bool) -> str:
        iqn, portal, iface = key
        rec = self._iface_record(iface)
        lines = [f"# BEGIN RECORD {VERSION}", f"node.name = {iqn}"]
        for name, value in self.nodes[key].items():
            masked = "password" in name and value != EMPTY and not show_secrets
            lines.append(f"{name} = {'********' if masked else value}")
        lines += [f"iface.iscsi_ifacename = {iface}",
                  f"iface.transport_name = {rec['transport_name']}",
                  f"iface.hwaddress = {rec['hwaddress']}",
                  f"node.conn[0].address = {portal.rpartition(':')[0]}",
                  f"node.conn[0].port = {portal.rpartition(':')[2]}", "# END RECORD", ""]
        return "\n".join(lines)

    def _node_login(self, call: Call, keys: list[tuple]):
        out, err, status = [], [], 0
        for iqn, portal, iface in keys:
            where = f"[iface: {iface}, target: {iqn}, portal: {_comma(portal)}]"
            out.append(f"Logging in to {where}\n")
            code = self._login(iqn, portal, iface)
            if code:
                err.append(f"iscsiadm: Could not login to {where}.\niscsiadm: initiator "
                           f"reported error ({code} - {ERRORS[code]})\n")
                status = status or code
            else:
                out.append(f"Login to {where} successful.\n")
        if status:
            err.append("iscsiadm: Could not log into all portals\n")
        return status, "".join(out), "".join(err)

    def _login(self, iqn: str, portal: str, iface: str) -> int:
        if any((s.target.iqn, s.portal, s.iface) == (iqn, portal, iface) for s in self.sessions):
            return 0
        target = next((t for t in self.targets if t.iqn == iqn and portal in t.portals), None)
        if target is None:
            return 8
        rec, node = self._iface_record(iface), self.nodes[(iqn, portal, iface)]
        if rec["transport_name"] not in self.kernel_transports:
            return 12
        if target.chap and not _chap_ok(node, "node.session.auth", target.chap):
            return 24
        if target.chap_in and not _chap_ok(node, "node.session.auth", target.chap_in, "_in"):
            return 19
        hwaddress = None if rec["hwaddress"] == EMPTY else rec["hwaddress"]
        session = Session(self._next_sid, target, portal, iface, rec["transport_name"], hwaddress)
        self._next_sid += 1
        self.sessions.append(session)
        if self.sysfs is not None:
            entry = self.sysfs / "class" / "iscsi_session" / f"session{session.sid}"
            entry.mkdir(parents=True, exist_ok=True)
            (entry / "ifacename").write_text(f"{iface}\n")
            (entry / "targetname").write_text(f"{iqn}\n")
        if target.devices_after_rescans == 0:
            self._make_devices(session)
        return 0

    def _node_logout(self, call: Call):
        iqn, portal = call.get("targetname"), call.get("portal")
        portal = split_portal(portal) if portal else None
        found = [s for s in self.sessions if (iqn is None or s.target.iqn == iqn)
                 and (portal is None or s.portal == portal)
                 and (not call.ifaces or s.iface == call.ifaces[0])]
        if not found:
            return 21, "", "iscsiadm: No matching sessions found\n"
        return 0, "".join(self._logout(s) for s in found), ""

    def _logout(self, session: Session) -> str:
        where = (f"[sid: {session.sid}, target: {session.target.iqn}, "
                 f"portal: {_comma(session.portal)}]")
        for lun, disk in session.devices.items():
            if self.dev is not None:
                self.device_path(session.portal, session.target.iqn, lun,
                                 session.transport).unlink(missing_ok=True)
                (self.dev / disk).unlink(missing_ok=True)
            if self.sysfs is not None:
                shutil.rmtree(self.sysfs / "block" / disk, ignore_errors=True)
        if self.sysfs is not None:
            shutil.rmtree(self.sysfs / "class" / "iscsi_session" / f"session{session.sid}",
                          ignore_errors=True)
        self.sessions.remove(session)
        return f"Logging out of session {where}\nLogout of {where} successful.\n"

    # -- devices and rescans ------------------------------------------------------
    def _make_devices(self, session: Session) -> None:
        for lun in session.target.luns:
            disk = _disk_name(self._next_disk)
            self._next_disk += 1
            session.devices[lun] = disk
            if self.sysfs is not None:
                (self.sysfs / "block" / disk / "device").mkdir(parents=True, exist_ok=True)
                (self.sysfs / "block" / disk / "holders").mkdir(exist_ok=True)
                (self.sysfs / "block" / disk / "size").write_text(f"{session.target.size // 512}\n")
            if self.dev is None:
                continue
            link = self.device_path(session.portal, session.target.iqn, lun, session.transport)
            link.parent.mkdir(parents=True, exist_ok=True)
            (self.dev / disk).touch()
            os.symlink(f"../../{disk}", link)

    def _rescan(self, sessions: list[Session]):
        if not sessions:
            return 21, "", "iscsiadm: No session found.\n"
        out = []
        for s in sessions:
            out.append(f"Rescanning session [sid: {s.sid}, target: {s.target.iqn}, "
                       f"portal: {_comma(s.portal)}]\n")
            s.rescans += 1
            if not s.devices and s.rescans >= s.target.devices_after_rescans:
                self._make_devices(s)
            for disk in s.devices.values() if self.sysfs is not None else ():
                (self.sysfs / "block" / disk / "size").write_text(f"{s.target.size // 512}\n")
        return 0, "".join(out), ""

    # -- -m session / -m host ------------------------------------------------------
    def _mode_session(self, call: Call):
        sessions = self.sessions
        if call.get("sid") is not None:
            sessions = [s for s in sessions if s.sid == int(call.get("sid"))]
            if not sessions:
                return 21, "", f"iscsiadm: Could not get session info for sid {call.get('sid')}\n"
        if "rescan" in call.flags:
            return self._rescan(sessions)
        if "logout" in call.flags:
            return 0, "".join(self._logout(s) for s in list(sessions)), ""
        if not sessions:
            return 21, "", "iscsiadm: No active sessions.\n"
        if call.get("print") in (None, "0", "-1"):
            return 0, "".join(f"{s.transport}: [{s.sid}] {s.portal},{s.target.tpgt} "
                              f"{s.target.iqn} (non-flash)\n" for s in sessions), ""
        return 0, f"iSCSI Transport Class version 2.0-870\nversion {VERSION}\n" + \
            "".join(self._session_tree(s) for s in sessions), ""

    def _session_tree(self, s: Session) -> str:
        lines = [f"Target: {s.target.iqn} (non-flash)",
                 f"\tCurrent Portal: {s.portal},{s.target.tpgt}",
                 f"\tPersistent Portal: {s.portal},{s.target.tpgt}",
                 "\t\t**********", "\t\tInterface:", "\t\t**********",
                 f"\t\tIface Name: {s.iface}", f"\t\tIface Transport: {s.transport}",
                 f"\t\tIface Initiatorname: {self.initiator}",
                 f"\t\tIface HWaddress: {s.hwaddress or 'default'}",
                 f"\t\tSID: {s.sid}", "\t\tiSCSI Connection State: LOGGED IN",
                 "\t\tiSCSI Session State: LOGGED_IN",
                 "\t\t************************", "\t\tAttached SCSI devices:",
                 "\t\t************************", f"\t\tHost Number: {s.sid + 1}\tState: running"]
        for lun, disk in s.devices.items():
            lines += [f"\t\tscsi{s.sid + 1} Channel 00 Id 0 Lun: {lun}",
                      f"\t\t\tAttached scsi disk {disk}\t\tState: running"]
        return "\n".join(lines) + "\n"

    def _mode_host(self, call: Call):
        hosts = sorted((self.sysfs / "class" / "iscsi_host").glob("host*")) if self.sysfs else []
        if not hosts:
            return 21, "", "iscsiadm: No iSCSI hosts.\n"
        lines = []
        for host in hosts:
            proc = _read(self.sysfs / "class" / "scsi_host" / host.name / "proc_name") or EMPTY
            fields = [_read(host / k) or EMPTY for k in
                      ("ipaddress", "hwaddress", "netdev", "initiatorname")]
            lines.append(f"{proc.removeprefix('iscsi_')}: [{host.name[4:]}] {fields[0]},"
                         f"[{fields[1]}],{fields[2]} {fields[3]}\n")
        return 0, "".join(lines), ""


def _comma(portal: str) -> str:
    """``IP:PORT`` as iscsiadm's messages write it: ``IP,PORT``."""
    host, _, port = portal.rpartition(":")
    return f"{host},{port}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _chap_ok(record: dict, prefix: str, secret: tuple[str, str], suffix: str = "") -> bool:
    user, password = secret
    return (record.get(f"{prefix}.authmethod") == "CHAP"
            and record.get(f"{prefix}.username{suffix}") == user
            and record.get(f"{prefix}.password{suffix}") == password)


def _disk_name(n: int) -> str:
    name = ""
    while n:
        n, rem = divmod(n - 1, 26)
        name = chr(ord("a") + rem) + name
    return f"sd{name}"
