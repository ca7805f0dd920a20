"""open-iscsi's discovery, node and session modes, as hvplug runs them.

Every command names the iface with ``-I`` where iscsiadm takes one
(discovery and node mode; session mode does not), and every command is
bounded by a timeout, so a stuck offload login cannot hang an attach::

    iscsiadm = Iscsiadm(execute, timeout=30.0)
    iscsiadm.discover("192.0.2.10:3260", "cxgb4i.00:07:43:28:b2:58")
    iscsiadm.node("iqn.2010-10.org.openstack:volume-42", "192.0.2.10:3260",
                  "cxgb4i.00:07:43:28:b2:58", "--login", ok=(SESSION_EXISTS,))

Iface records themselves are hvplug.initiator.iface's business (its
``IfaceManager`` runs ``-m iface`` through :meth:`Iscsiadm.run` too).  CHAP
secrets never pass through here: ``iscsiadm -o update -n
node.session.auth.password -v SECRET`` would show the secret to every user
of ``ps``, so :class:`NodeRecords` writes the auth settings into the node
record file instead.
"""

import dataclasses
import glob
import ipaddress
import re
from pathlib import Path

from hvplug import exception
from hvplug.utils import executor, fileutils, portals

# iscsiadm exit codes (open-iscsi usr/iscsi_err.h) that some commands treat
# as an answer rather than a failure; each caller says which, and why.
SESSION_EXISTS = 15     # ISCSI_ERR_SESS_EXISTS: --login found the session already up
NO_RECORDS = 21         # ISCSI_ERR_NO_OBJS_FOUND: no such node record / no session
LOGIN_AUTH_FAILED = 24  # ISCSI_ERR_LOGIN_AUTH_FAILED: the target refused our CHAP

NODES_DIR = "/etc/iscsi/nodes"
# iscsiadm -m session: "tcp: [3] 192.0.2.10:3260,1 iqn.2010-10.org.openstack:volume-42 (non-flash)"
# The transport prefix is whatever transport carries the session (tcp, iser,
# cxgb4i, qla4xxx, bnx2i, be2iscsi, ocs, qedi...): never assume tcp or iser.
_SESSION = re.compile(r"^(?P<transport>[\w.-]+): \[(?P<sid>\d+)\] "
                      r"(?P<portal>\S+),(?P<tpgt>-?\d+) (?P<iqn>\S+)")
_END_RECORD = "# END RECORD"


@dataclasses.dataclass(frozen=True)
class Session:
    """One line of ``iscsiadm -m session``."""

    transport: str
    sid: int
    host: str
    port: int
    tpgt: int
    iqn: str

    def reaches(self, host: str, port: int, iqn: str) -> bool:
        return (same_host(self.host, host) and self.port == port
                and self.iqn.lower() == iqn.lower())


def same_host(a: str, b: str) -> bool:
    """Whether two portal hosts name the same address (IPv6 spellings vary)."""
    return normal_host(a) == normal_host(b)


def normal_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def parse_sessions(text: str) -> list[Session]:
    sessions = []
    for line in text.splitlines():
        match = _SESSION.match(line.strip())
        if match:
            host, port = portals.parse_portal(match["portal"])
            sessions.append(Session(match["transport"], int(match["sid"]), host, port,
                                    int(match["tpgt"]), match["iqn"]))
    return sessions


def parse_discovery(text: str) -> list[tuple[str, str]]:
    """``[(portal, iqn)]`` from sendtargets output (``IP:PORT,TPGT IQN`` lines)."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and "," in fields[0]:
            found.append((fields[0].rpartition(",")[0], fields[1]))
    return found


class Iscsiadm:
    """iscsiadm through an injected ``execute``, each call bounded by ``timeout``.

    ``execute=None``: hvplug.utils.executor.execute, looked up at each call.
    """

    def __init__(self, execute, timeout: float):
        self.execute = execute
        self.timeout = timeout

    def run(self, *args: str, ok: tuple[int, ...] = (),
            secrets: tuple[str, ...] = ()) -> tuple[int, str]:
        """``(exit code, stdout)``; exit codes in ``ok`` are answers, not errors.

        A call that outlives the timeout raises ProcessTimeout (the executor's).
        """
        execute = self.execute or executor.execute
        try:
            out, _ = execute("iscsiadm", *args, check_exit_code=(0,),
                             timeout=self.timeout, secrets=secrets)
        except exception.ProcessExecutionError as exc:
            status = exc.kwargs.get("status")
            if status in ok:
                return status, exc.kwargs.get("stdout") or ""
            raise
        return 0, out

    def discover(self, portal: str, iface: str) -> list[tuple[str, str]]:
        """SendTargets discovery through ``iface``; creates the node records."""
        _, out = self.run("-m", "discovery", "-t", "sendtargets", "-p", portal, "-I", iface)
        return parse_discovery(out)

    def node(self, iqn: str, portal: str, iface: str, *args: str,
             ok: tuple[int, ...] = (), secrets: tuple[str, ...] = ()) -> int:
        """``iscsiadm -m node -T IQN -p PORTAL -I IFACE ARGS``; the exit code."""
        code, _ = self.run("-m", "node", "-T", iqn, "-p", portal, "-I", iface, *args,
                           ok=ok, secrets=secrets)
        return code

    def node_exists(self, iqn: str, portal: str, iface: str) -> bool:
        # 21: no record for this target, portal and iface (yet).
        return self.node(iqn, portal, iface, "-o", "show", ok=(NO_RECORDS,)) == 0

    def sessions(self) -> list[Session]:
        # 21: "No active sessions." is an empty list, not a failure.
        _, out = self.run("-m", "session", ok=(NO_RECORDS,))
        return parse_sessions(out)

    def rescan(self, sid: int) -> None:
        self.run("-m", "session", "-r", str(sid), "--rescan")


class NodeRecords:
    """open-iscsi node record files, for the settings that must not go in argv.

    open-iscsi 2.1 keeps a record at ``NODES/<IQN>/<IP>,<PORT>,<TPGT>/<IFACE>``
    when the target portal group is known (discovery), and at
    ``NODES/<IQN>/<IP>,<PORT>`` (the iface named inside) when it is not
    (``-o new``); IPv6 addresses are written without brackets.  A file
    holds ``key = value`` lines between ``# BEGIN RECORD`` and
    ``# END RECORD``; iscsiadm reads it again for every login.
    """

    def __init__(self, nodes_dir: str = NODES_DIR):
        self.nodes_dir = Path(nodes_dir)

    def paths(self, iqn: str, host: str, port: int, iface: str) -> list[Path]:
        """Every record file of ``iqn`` at ``host:port`` bound to ``iface``."""
        target_dir = self.nodes_dir / iqn
        found = []
        static = target_dir / f"{host},{port}"
        if static.is_file() and _setting(static, "iface.iscsi_ifacename", "default") == iface:
            found.append(static)
        pattern = f"{glob.escape(host)},{port},*/{glob.escape(iface)}"
        found += sorted(path for path in target_dir.glob(pattern) if path.is_file())
        return found

    def update(self, iqn: str, host: str, port: int, iface: str,
               settings: dict[str, str]) -> list[Path]:
        """Set ``settings`` in every matching record; each file stays 0600."""
        for key, value in settings.items():
            if any(c in str(value) for c in "\r\n\0"):
                raise exception.InvalidConnectionInfo(
                    reason=f"the value for {key} must be a single line")
        paths = self.paths(iqn, host, port, iface)
        if not paths:
            raise exception.NodeRecordNotFound(
                iqn=iqn, portal=portals.format_portal(host, port), iface=iface,
                nodes_dir=self.nodes_dir)
        for path in paths:
            fileutils.write_private_file(path, with_settings(path.read_text(), settings))
        return paths


def _setting(path: Path, key: str, default: str) -> str:
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return default


def with_settings(text: str, settings: dict[str, str]) -> str:
    """Record ``text`` with ``settings`` replaced in place or added before its end."""
    left = dict(settings)
    lines = []
    for line in text.splitlines():
        key = line.partition("=")[0].strip()
        if "=" in line and key in left:
            line = f"{key} = {left.pop(key)}"
        elif line.strip() == _END_RECORD:
            lines += [f"{key} = {value}" for key, value in left.items()]
            left = {}
        lines.append(line)
    lines += [f"{key} = {value}" for key, value in left.items()]
    return "\n".join(lines) + "\n"
