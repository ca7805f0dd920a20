"""Recording stand-ins for ``ietadm`` (IET) and ``iscsictl`` (Chelsio chiscsi).

Neither tool can run here (IET is a kernel module, chiscsi proprietary
hardware software), so these fakes keep the state the real daemon would --
targets, LUNs, accounts, sessions -- and answer every command with the
output and exit status recorded in ``tests/data/target/transcripts/``
(whose headers say which source each answer was reconstructed from).  A
fake is called exactly like ``hvplug.utils.executor.execute`` and raises
ProcessExecutionError the same way, stderr masked with ``secrets``.

``inject(op, key=..., before=...)`` makes the next ``op`` answer with
another transcript entry, or runs ``before`` first (a concurrent process
getting in between).
"""

import collections
import dataclasses
import difflib
import os
import re
from pathlib import Path

from hvplug import exception
from hvplug.utils.masking import redact

TRANSCRIPTS = Path(__file__).parent / "data" / "target" / "transcripts"


class Transcripts:
    """The entries of one transcript file: ``{key: (exit, stdout, stderr)}``."""

    def __init__(self, name: str):
        self.entries: dict[str, list] = {}
        entry = None
        for line in (TRANSCRIPTS / f"{name}.txt").read_text().splitlines():
            if line.startswith("== "):
                entry = self.entries[line[3:].strip()] = [0, [], []]
            elif entry is None or line.startswith("#") or not line.strip():
                continue
            elif line.startswith("exit "):
                entry[0] = int(line[5:])
            elif line[:2] in ("1|", "2|"):
                entry[int(line[0])].append(line[3:])

    def answer(self, key: str, **fields) -> tuple[int, str, str]:
        status, out, err = self.entries[key]
        return status, self._fill(out, fields), self._fill(err, fields)

    def text(self, key: str, **fields) -> str:
        return self.answer(key, **fields)[1]

    @staticmethod
    def _fill(lines: list[str], fields: dict) -> str:
        return "".join(line.format_map(fields) + "\n" for line in lines)


class FakeTool:
    """What every fake shares: recording, injection, the executor's contract."""

    program = ""
    transcript = ""

    def __init__(self):
        self.calls: list[tuple[str, ...]] = []
        self.kwargs: list[dict] = []
        self.script = Transcripts(self.transcript)
        self._injected: dict[str, collections.deque] = collections.defaultdict(
            collections.deque)

    def inject(self, op: str, key: str | None = None, before=None, **fields) -> None:
        self._injected[op].append((key, before, fields))

    def __call__(self, *cmd, check_exit_code=(0,), timeout=60.0, input=None, secrets=()):
        assert cmd[0] == self.program, cmd
        self.calls.append(cmd)
        self.kwargs.append({"secrets": secrets, "input": input})
        op = self.op_name(cmd[1:])
        key, fields = None, {}
        if self._injected[op]:
            key, before, fields = self._injected[op].popleft()
            if before:
                before()
        status, out, err = (self.script.answer(key, **fields) if key
                            else self.handle(op, cmd[1:]))
        if status not in check_exit_code:
            raise exception.ProcessExecutionError(
                cmd=" ".join(cmd[:2]), status=status,
                stderr=redact(err.strip(), list(secrets)), stdout=out)
        return out, err

    def commands(self, *words: str) -> list[tuple[str, ...]]:
        """The recorded commands that contain every one of ``words``."""
        return [c for c in self.calls if all(w in c for w in words)]

    def op_name(self, args) -> str:
        raise NotImplementedError

    def handle(self, op: str, args) -> tuple[int, str, str]:
        raise NotImplementedError


# -- IET -----------------------------------------------------------------------
@dataclasses.dataclass
class IetTarget:
    name: str
    luns: dict[int, tuple[str, str]] = dataclasses.field(default_factory=dict)
    users: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    sessions: dict[int, dict] = dataclasses.field(default_factory=dict)  # sid -> info


class FakeIetadm(FakeTool):
    """ietd + the IET kernel module as ``ietadm`` and /proc/net/iet see them."""

    program = "ietadm"
    transcript = "ietadm"

    def __init__(self, proc_dir: Path):
        super().__init__()
        proc_dir.mkdir(parents=True, exist_ok=True)
        self.volume_path = proc_dir / "volume"
        self.session_path = proc_dir / "session"
        self.targets: dict[int, IetTarget] = {}
        self._next_sid = 281475567911424
        self._publish()

    # what tests set up
    def add_target(self, tid: int, name: str, lun_path: str | None = None) -> None:
        self.targets[tid] = IetTarget(name)
        if lun_path:
            self.targets[tid].luns[0] = (lun_path, "fileio")
        self._publish()

    def add_session(self, tid: int, initiator: str, cids=(0,)) -> int:
        sid = self._next_sid
        self._next_sid += 1
        self.targets[tid].sessions[sid] = {"initiator": initiator, "cids": list(cids)}
        self._publish()
        return sid

    def restart(self, conf: Path | None = None) -> None:
        """ietd (and the module) restarted: empty, then what ietd.conf says."""
        self.targets = {}
        if conf is not None and conf.exists():
            self._load(conf.read_text())
        self._publish()

    def tid_of(self, name: str) -> int | None:
        return next((t for t, v in self.targets.items()
                     if v.name.casefold() == name.casefold()), None)

    # command handling
    def op_name(self, args) -> str:
        opts = _ietadm_opts(args)
        noun = ("user" if "user" in opts else "conn" if "cid" in opts
                else "lun" if "lun" in opts else "target")
        return f"{opts['op']}_{noun}"

    def handle(self, op, args):
        opts = _ietadm_opts(args)
        tid = int(opts.get("tid", 0))
        target = self.targets.get(tid)
        answer = getattr(self, f"_{op}")(tid, target, opts)
        self._publish()
        return self.script.answer(answer)

    def _new_target(self, tid, target, opts):
        name = opts["params"].partition("=")[2]
        if self.tid_of(name) is not None:
            return "new_target.name_exists"
        if target is not None:
            return "new_target.tid_taken"
        self.targets[tid] = IetTarget(name)
        return "ok"

    def _delete_target(self, tid, target, opts):
        if target is None:
            return "delete_target.not_found"
        if target.sessions:
            return "delete_target.busy"
        del self.targets[tid]
        return "ok"

    def _new_lun(self, tid, target, opts):
        if target is None:
            return "no_target"
        lun = int(opts["lun"])
        if lun in target.luns:
            return "new_lun.exists"
        params = dict(p.split("=", 1) for p in opts["params"].split(","))
        target.luns[lun] = (params["Path"], params.get("Type", "fileio"))
        return "ok"

    def _delete_lun(self, tid, target, opts):
        if target is None:
            return "no_target"
        if target.luns.pop(int(opts["lun"]), None) is None:
            return "delete_lun.not_found"
        return "ok"

    def _new_user(self, tid, target, opts):
        params = dict(p.split("=", 1) for p in opts["params"].split(","))
        if target is not None:  # ietd keeps accounts of unknown tids too
            target.users.append((params["IncomingUser"], params["Password"]))
        return "ok"

    def _delete_user(self, tid, target, opts):
        user = opts["params"].partition("=")[2]
        if target is None or not any(u == user for u, _ in target.users):
            return "delete_user.not_found"
        target.users = [(u, p) for u, p in target.users if u != user]
        return "ok"

    def _delete_conn(self, tid, target, opts):
        if target is None:
            return "no_target"
        session = target.sessions.get(int(opts["sid"]))
        if session is None or int(opts["cid"]) not in session["cids"]:
            return "delete_conn.not_found"
        session["cids"].remove(int(opts["cid"]))
        if not session["cids"]:  # ietd closes a session with its last connection
            del target.sessions[int(opts["sid"])]
        return "ok"

    # state -> /proc/net/iet/*
    def _publish(self) -> None:
        volume, session = [], []
        for tid, t in sorted(self.targets.items(), reverse=True):  # the kernel lists newest first
            head = self.script.text("proc.target", tid=tid, name=t.name)
            volume.append(head)
            session.append(head)
            for lun, (path, iotype) in sorted(t.luns.items()):
                volume.append(self.script.text("proc.lun", lun=lun, iotype=iotype, path=path))
            for sid, s in t.sessions.items():
                session.append(self.script.text("proc.session", sid=sid,
                                                initiator=s["initiator"]))
                session += [self.script.text("proc.conn", cid=c, ip="192.0.2.77")
                            for c in s["cids"]]
        self.volume_path.write_text("".join(volume))
        self.session_path.write_text("".join(session))

    def _load(self, text: str) -> None:
        """ietd's start-up read of ietd.conf (plain.c plain_target_init/account_init)."""
        tid = 0
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            key = words[0].casefold()
            if key == "target":
                tid = max(self.targets, default=0) + 1
                self.targets[tid] = IetTarget(words[1])
            elif key == "lun" and tid:
                params = dict(p.split("=", 1) for p in words[2].split(","))
                self.targets[tid].luns[int(words[1])] = (params["Path"], params["Type"])
            elif key == "incominguser" and tid:
                self.targets[tid].users.append((words[1], words[2]))


def _ietadm_opts(args) -> dict[str, str]:
    """ietadm's getopt_long, enough for the options hvplug uses."""
    opts, items = {}, list(args)
    while items:
        arg = items.pop(0)
        name, eq, value = arg[2:].partition("=")
        if name == "user":
            opts["user"] = ""
        elif eq:
            opts[name] = value
        else:
            opts[name] = items.pop(0)
    return opts


# -- chiscsi ---------------------------------------------------------------------
class FakeIscsictl(FakeTool):
    """The chiscsi kernel module as ``iscsictl`` sees it.

    Each ``-S`` records what the target file held (text and mode) and what
    the ``-x`` file held, in ``starts``.
    """

    program = "iscsictl"
    transcript = "iscsictl"

    def __init__(self):
        super().__init__()
        self.targets: dict[str, dict] = {}
        self.starts: list[dict] = []
        self._next_id = 1  # iscsi_node_id starts at 1 and only grows

    def restart(self) -> None:
        self.targets = {}

    def op_name(self, args) -> str:
        return {"-S": "start", "-s": "stop", "-c": "check"}[args[0]]

    def handle(self, op, args):
        value = dict(a.split("=", 1) for a in args if a.startswith("target="))["target"]
        if op == "check":
            return self._list() if value == "ALL" else self._detail(value)
        if op == "stop":
            return self._stop(value)
        return self._start(value, args)

    def _start(self, name, args):
        path, extra = Path(args[args.index("-f") + 1]), Path(args[args.index("-x") + 1])
        self.starts.append({"file": path.read_text(), "mode": os.stat(path).st_mode & 0o777,
                            "global": extra.read_bytes() if extra.exists() else None})
        block = _chiscsi_blocks(path.read_text()).get(name)  # exact, as iscsictl compares
        if block is None:
            return self.script.answer("start.name_not_in_file", name=name)
        if name in self.targets:
            self.targets[name].update(block)
            return self.script.answer("start.reconfigured")
        self.targets[name] = dict(block, id=self._next_id, busy=False)
        self._next_id += 1
        return self.script.answer("start.added", name=name)

    def _stop(self, name):
        target = self.targets.get(name)
        if target is None:
            return self.script.answer("stop.not_found", name=name)
        if target["busy"]:
            return self.script.answer("stop.busy", name=name)
        del self.targets[name]
        return self.script.answer("stop.removed", name=name)

    def _list(self):
        out = "".join(self.script.text("list.target", name=n, id=t["id"], logins=0, tag=1,
                                       portal=t["portals"][0], path=t["device"])
                      for n, t in self.targets.items())
        return 0, out + "\n" if out else "", ""

    def _detail(self, name):
        target = self.targets.get(name)
        if target is None:
            return self.script.answer("check.not_found", name=name)
        out = self.script.text("check.detail", name=name)
        if target.get("chap"):
            user, secret = target["chap"]
            out += self.script.text("check.detail.chap", user=user, secret=secret)
        out += self.script.text("check.detail.tail", tag=1, portal=target["portals"][0],
                                path=target["device"])
        return 0, out, ""


def _chiscsi_blocks(text: str) -> dict[str, dict]:
    """iscsictl's reading of a target file (iscsictl_config_file_read)."""
    blocks, current = {}, None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith(":"):
            current = {"portals": []} if line[:-1].lower() == "target" else None
            continue
        key, _, value = line.partition("=")
        if current is None:
            continue
        if key == "TargetName":
            blocks[value.lower()] = current
        elif key == "TargetDevice":
            current["device"] = value
        elif key == "PortalGroup":
            current["portals"].append(value.partition("@")[2])
        elif key == "Auth_CHAP_Initiator":
            current["chap"] = tuple(re.findall(r'"([^"]*)"', value))
    return blocks


# -- golden text files -----------------------------------------------------------
GOLDEN_DIR = Path(__file__).parent / "data"
REGEN_ENV = "HVPLUG_REGEN_GOLDEN"


def assert_golden_text(text: str, path: str) -> None:
    """Byte-exact comparison with ``tests/data/<path>``, unified diff on failure.

    With ``HVPLUG_REGEN_GOLDEN=1`` the file is (re)written instead.
    """
    golden = GOLDEN_DIR / path
    if os.environ.get(REGEN_ENV) == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
        return
    expected = golden.read_text()
    if expected != text:
        diff = difflib.unified_diff(expected.splitlines(keepends=True),
                                    text.splitlines(keepends=True),
                                    fromfile=str(golden), tofile="generated")
        raise AssertionError(f"differs from {golden} ({REGEN_ENV}=1 rewrites it):\n"
                             + "".join(diff))
