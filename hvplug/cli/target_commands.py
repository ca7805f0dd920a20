"""``hvplug target ...``: export volumes and hand out their connection_info.

``create-export`` prints the connection_info (CHAP password included: it
is the hand-off ``hvplug attach --connection-info -`` consumes, like
Cinder's initialize_connection); every other command masks the password
unless ``--show-secrets`` is given.

``create-export`` checks every argument (volume id, path, size, initiator,
helper) before it creates anything, and a backing file it created or grew
is removed or shrunk back if anything fails later.  ``list`` and
``ensure-exports`` go on past a record that cannot be read: they name it
and exit 1 at the end.
"""

import argparse
import errno
import json
import os
import re
import stat
import sys
from typing import TYPE_CHECKING

from hvplug import exception
from hvplug.conf.choices import TARGET_HELPERS as HELPERS

if TYPE_CHECKING:  # imported when run: the command line starts without them
    from hvplug.target.export import ExportStore

_SIZE = re.compile(r"(\d+)([KMGT]?)(i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_SIZE = (1 << 63) - 1  # off_t: no file on Linux can be larger
_TOO_BIG = (errno.EFBIG, errno.EINVAL)  # ftruncate past the filesystem's file size limit


def parse_size(text: str) -> int:
    """``512M``, ``10G``, ``1T`` or plain bytes → bytes (binary units)."""
    match = _SIZE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match or len(match.group(1)) > 30 or int(match.group(1)) == 0:
        raise exception.InvalidInput(
            reason=f"--size {text!r} is not a size such as 512M, 10G or 1073741824")
    size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if size > MAX_SIZE:
        raise exception.InvalidInput(
            reason=f"--size {text!r} is {size} bytes, more than any file can hold "
            f"(at most {MAX_SIZE} bytes, 8 EiB); give a size such as 10G")
    return size


def register(commands, common: argparse.ArgumentParser) -> None:
    target = commands.add_parser("target", parents=[common],
                                 help="export volumes from this host's iSCSI target")
    sub = target.add_subparsers(dest="target_command", metavar="SUBCOMMAND", required=True)

    create = sub.add_parser("create-export", parents=[common],
                            help="export a file or block device; print its connection_info")
    create.add_argument("--volume-id", required=True)
    create.add_argument("--path", required=True,
                        help="backing file or block device, inside [target] backing_roots")
    create.add_argument("--size", help="create a sparse file of this size (512M, 10G) "
                        "at --path if it does not exist, or grow a smaller one to it "
                        "(never shrunk)")
    create.add_argument("--helper", choices=HELPERS,
                        help="target helper (default: [target] iscsi_helper)")
    create.add_argument("--initiator", metavar="IQN",
                        help="initiator to admit. lioadm needs one (its ACLs admit named "
                        "initiators only); tgt, IET and chiscsi admit any that knows CHAP")
    create.set_defaults(func=cmd_create_export)

    remove = sub.add_parser("remove-export", parents=[common], help="remove an export")
    remove.add_argument("--volume-id", required=True)
    remove.set_defaults(func=cmd_remove_export)

    ensure = sub.add_parser("ensure-exports", parents=[common],
                            help="re-create every recorded export the daemon lost")
    ensure.set_defaults(func=cmd_ensure_exports)

    list_ = sub.add_parser("list", parents=[common], help="list recorded exports")
    list_.set_defaults(func=cmd_list)

    show = sub.add_parser("show", parents=[common], help="show one export")
    show.add_argument("--volume-id", required=True)
    show.add_argument("--show-secrets", action="store_true",
                      help="include the CHAP password")
    show.set_defaults(func=cmd_show)

    for parser in (create, remove, ensure, list_, show):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _store() -> "ExportStore":
    from hvplug.conf import CONF
    from hvplug.target.export import ExportStore
    return ExportStore(CONF.target.exports_dir)


def _target_for(volume_id: str):
    """The helper that made the recorded export of ``volume_id``."""
    from hvplug.conf import CONF
    from hvplug.target import registry
    from hvplug.target.export import check_volume_id
    export = _store().load(check_volume_id(volume_id))
    if export is None:
        raise exception.ExportNotFound(volume_id=volume_id)
    return registry.target_from_conf(CONF.target, helper=export.helper)


def _note(text: str) -> None:
    """What create-export did to a backing file, on stderr (stdout is the hand-off)."""
    print(f"hvplug: {text}", file=sys.stderr)


class BackingFile:
    """The backing file ``create-export --size`` creates or grows, and its undo.

    ``plan`` decides (and refuses) before anything changes; ``apply`` makes
    the change; ``undo`` takes back exactly what ``apply`` did: a file it
    created is removed, a file it grew is truncated back to its old size.
    """

    def __init__(self, path: str, size: int | None, size_text: str | None,
                 roots: list[str] | None = None):
        self.path, self.size, self.size_text = path, size, size_text
        self.roots = roots or []
        self.action = "keep"
        self.old_size: int | None = None
        self.applied = False
        self.made_dir: str | None = None  # a missing backing root this call created

    def plan(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            parent = os.path.dirname(self.path)
            if not os.path.isdir(parent) and parent not in self.roots:
                raise exception.InvalidInput(
                    reason=f"--path {self.path!r}: its directory {parent!r} does not "
                    "exist; create it first (mkdir -p) or choose another path") from None
            self.action = "create"
            return
        if self.size is None:
            return
        if stat.S_ISBLK(st.st_mode):
            have = _device_size(self.path)
            if have < self.size:
                raise exception.InvalidInput(
                    reason=f"block device {self.path!r} holds {have} bytes, less than "
                    f"--size {self.size_text!r} ({self.size} bytes), and hvplug cannot "
                    "grow a device: extend it (e.g. lvextend -L) or leave --size out")
            return
        self.old_size = st.st_size
        if st.st_size < self.size:
            self.action = "grow"

    def apply(self) -> None:
        if self.action == "create":
            parent = os.path.dirname(self.path)
            if not os.path.isdir(parent):  # a configured backing root, not there yet
                try:
                    os.makedirs(parent, mode=0o700)
                except OSError as exc:
                    raise self._failed("create", exc) from None
                self.made_dir = parent
                _note(f"created the backing root {parent!r}")
            self._resize(os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
            _note(f"created the sparse file {self.path!r} of {self.size} bytes")
        elif self.action == "grow":
            self._resize(os.O_WRONLY | os.O_NOFOLLOW)
            _note(f"grew {self.path!r} from {self.old_size} to {self.size} bytes (--size "
                  f"{self.size_text}); a target that already served it shows the new "
                  "size once re-created")
        elif self.old_size is not None and self.size is not None and self.old_size > self.size:
            _note(f"{self.path!r} is {self.old_size} bytes, larger than --size "
                  f"{self.size_text}; it was left as it is (never shrunk)")

    def _resize(self, flags: int) -> None:
        """Open the file with ``flags`` (creating it, for "create") and set
        its size to ``--size``; from the open on, ``undo`` takes it back."""
        # create-export passes a missing path only with --size (check_new_export)
        assert self.size is not None
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise self._failed(self.action, exc) from None
        self.applied = True  # it is ours from here: undo removes or shrinks it
        try:
            os.ftruncate(fd, self.size)
        except OSError as exc:
            raise self._failed(self.action, exc) from None
        finally:
            os.close(fd)

    def undo(self) -> None:
        if not self.applied:
            self._remove_made_dir()
            return
        try:
            if self.action == "create":
                os.unlink(self.path)
            elif self.action == "grow":
                assert self.old_size is not None  # plan() sets it when it plans a grow
                os.truncate(self.path, self.old_size)
        except OSError as exc:
            _note(f"could not take back the {self.action} of {self.path!r}: "
                  f"{exc.strerror}; remove or truncate it by hand")
        self.applied = False
        self._remove_made_dir()

    def _remove_made_dir(self) -> None:
        if self.made_dir is not None:
            try:
                os.rmdir(self.made_dir)  # only if still empty
            except OSError:
                pass
            self.made_dir = None

    def _failed(self, action: str, exc: OSError) -> exception.HvplugError:
        self.undo()
        if exc.errno in _TOO_BIG:
            return exception.InvalidInput(
                reason=f"--size {self.size_text!r} ({self.size} bytes) is more than the "
                f"filesystem holding {self.path!r} allows for one file ({exc.strerror}); "
                "give a smaller --size, or put the volume on a filesystem with larger "
                "files (ext4 with 4 KiB blocks stops at 16 TiB, XFS at 8 EiB). No file "
                "was left behind")
        return exception.BackingFileFailed(
            action=action, path=repr(self.path), reason=exc.strerror or str(exc),
            fix="Check the directory's permissions, free space and whether it is "
                "read-only, then retry.")


def _device_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def cmd_create_export(args, ctx) -> int:
    from hvplug.conf import CONF
    from hvplug.target import registry
    from hvplug.target.base import backing_roots, check_initiator
    from hvplug.target.export import check_volume_id

    # Every argument first: nothing exists yet when one is refused.
    check_volume_id(args.volume_id)
    size = parse_size(args.size) if args.size is not None else None
    connector = {}
    if args.initiator is not None:
        connector["initiator"] = check_initiator(args.initiator)
    target = registry.target_from_conf(CONF.target, helper=args.helper)
    path = target.check_new_export(args.volume_id, args.path, may_be_missing=size is not None)
    existed = target.store.load(args.volume_id) is not None
    backing = BackingFile(path, size, args.size, backing_roots(CONF.target))
    backing.plan()
    try:
        backing.apply()
        export = target.create_export(args.volume_id, path)
        try:
            info = target.initialize_connection(export.volume_id, connector)
        except BaseException:
            if existed:  # the export was there before: it stays, and so does its file
                backing.applied = False
                raise
            try:
                target.remove_export(export.volume_id)
            except exception.HvplugError as exc:
                backing.applied = False  # a target may still serve the file: keep it
                _note(f"could not remove the new export again: {exc.message}")
            raise
    except BaseException:
        backing.undo()
        raise
    ctx.output(info, json.dumps(info, indent=2), reveal=True)
    return exception.EXIT_OK


def cmd_remove_export(args, ctx) -> int:
    _target_for(args.volume_id).remove_export(args.volume_id)
    ctx.output({"volume_id": args.volume_id, "removed": True},
               f"Removed the export of volume {args.volume_id}")
    return exception.EXIT_OK


def _finish(problems: list[str], total: int, done: int, action: str, command: str) -> int:
    """Name each problem on stderr, then the summary; exit 1 if there were any."""
    if not problems:
        return exception.EXIT_OK
    for message in problems:
        print(f"hvplug: error: {message}", file=sys.stderr)
    summary = exception.ExportsIncomplete(failed=len(problems), total=total, done=done,
                                          action=action, command=command)
    print(f"hvplug: error: {summary.message}", file=sys.stderr)
    return summary.exit_code


def cmd_ensure_exports(args, ctx) -> int:
    from hvplug.conf import CONF
    from hvplug.target import registry

    good, bad = _store().scan()
    problems = [b.message for b in bad]
    failed_rows, restored = [], []
    by_helper: dict[str, list] = {}
    for export in good:
        by_helper.setdefault(export.helper, []).append(export)
    for name in sorted(by_helper):
        exports = by_helper[name]
        try:
            done, failed = registry.target_from_conf(CONF.target, helper=name) \
                .restore_exports(exports)
        except exception.HvplugError as exc:  # the helper itself is unusable
            done, failed = [], [(e, exc) for e in exports]
        restored += done
        for export, error in failed:
            problems.append(f"volume {export.volume_id} ({export.iqn}): {error.message}")
            failed_rows.append({"volume_id": export.volume_id, "iqn": export.iqn,
                                "error": error.message})
    rows = [{"volume_id": e.volume_id, "iqn": e.iqn, "tid": e.tid} for e in restored]
    payload: dict[str, list] = {"exports": rows}
    if problems:
        payload.update(failed=failed_rows, unreadable=[b.message for b in bad])
    ctx.output(payload,
               "\n".join(f"{r['volume_id']}: {r['iqn']} (tid {r['tid']})" for r in rows)
               or ("No exports were restored." if problems else "No exports are recorded."))
    return _finish(problems, len(good) + len(bad), len(restored), "restored",
                   "ensure-exports")


def cmd_list(args, ctx) -> int:
    good, bad = _store().scan()
    rows = [{"volume_id": e.volume_id, "iqn": e.iqn, "helper": e.helper, "tid": e.tid,
             "path": e.path, "portal": e.portals[0]} for e in good]
    text = "\n".join(f"{r['volume_id']}  {r['helper']}  tid {r['tid']}  {r['iqn']}  "
                     f"{r['portal']}  {r['path']}" for r in rows)
    payload: dict[str, list] = {"exports": rows}
    if bad:
        payload["unreadable"] = [b.message for b in bad]
    ctx.output(payload, text or ("No readable exports." if bad else "No exports are recorded."))
    return _finish([b.message for b in bad], len(good) + len(bad), len(good), "listed",
                   "list")


def cmd_show(args, ctx) -> int:
    from hvplug.target.export import check_volume_id

    export = _store().load(check_volume_id(args.volume_id))
    if export is None:
        raise exception.ExportNotFound(volume_id=args.volume_id)
    record = export.public(show_secrets=args.show_secrets)
    ctx.output(record, "\n".join(f"{key}: {value}" for key, value in record.items()),
               reveal=args.show_secrets)
    return exception.EXIT_OK
