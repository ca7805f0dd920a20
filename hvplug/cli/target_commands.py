"""``hvplug target ...``: export volumes and hand out their connection_info.

``create-export`` prints the connection_info (CHAP password included: it
is the hand-off ``hvplug attach --connection-info -`` consumes, like
Cinder's initialize_connection); every other command masks the password
unless ``--show-secrets`` is given.
"""

import argparse
import json
import os
import re
from pathlib import Path

from hvplug import exception
from hvplug.conf import CONF
from hvplug.conf.target import HELPERS
from hvplug.target import registry
from hvplug.target.export import ExportStore

_SIZE = re.compile(r"^(\d+)([KMGT]?)(i?B)?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``512M``, ``10G``, ``1T`` or plain bytes → bytes (binary units)."""
    match = _SIZE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise exception.InvalidInput(
            reason=f"--size {text!r} is not a size such as 512M, 10G or 1073741824")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def register(commands, common: argparse.ArgumentParser) -> None:
    target = commands.add_parser("target", parents=[common],
                                 help="export volumes from this host's iSCSI target")
    sub = target.add_subparsers(dest="target_command", metavar="SUBCOMMAND", required=True)

    create = sub.add_parser("create-export", parents=[common],
                            help="export a file or block device; print its connection_info")
    create.add_argument("--volume-id", required=True)
    create.add_argument("--path", required=True, help="backing file or block device")
    create.add_argument("--size", help="create a sparse file of this size (512M, 10G) "
                        "at --path if it does not exist")
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


def _store() -> ExportStore:
    return ExportStore(CONF.target.exports_dir)


def _target_for(volume_id: str):
    """The helper that made the recorded export of ``volume_id``."""
    export = _store().load(volume_id)
    if export is None:
        raise exception.ExportNotFound(volume_id=volume_id)
    return registry.target_from_conf(CONF.target, helper=export.helper)


def _create_backing_file(path: str, size: int) -> None:
    if os.path.exists(path):
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.truncate(size)


def cmd_create_export(args, ctx) -> int:
    if args.size:
        _create_backing_file(args.path, parse_size(args.size))
    elif not os.path.exists(args.path):
        raise exception.InvalidInput(
            reason=f"--path {args.path} does not exist; give --size to create a sparse file")
    target = registry.target_from_conf(CONF.target, helper=args.helper)
    export = target.create_export(args.volume_id, str(Path(args.path).resolve()))
    connector = {"initiator": args.initiator} if args.initiator else {}
    info = target.initialize_connection(export.volume_id, connector)
    ctx.output(info, json.dumps(info, indent=2), reveal=True)
    return exception.EXIT_OK


def cmd_remove_export(args, ctx) -> int:
    _target_for(args.volume_id).remove_export(args.volume_id)
    ctx.output({"volume_id": args.volume_id, "removed": True},
               f"Removed the export of volume {args.volume_id}")
    return exception.EXIT_OK


def cmd_ensure_exports(args, ctx) -> int:
    helpers = sorted({e.helper for e in _store().all()})
    exports = [e for name in helpers
               for e in registry.target_from_conf(CONF.target, helper=name).ensure_exports()]
    rows = [{"volume_id": e.volume_id, "iqn": e.iqn, "tid": e.tid} for e in exports]
    ctx.output({"exports": rows},
               "\n".join(f"{r['volume_id']}: {r['iqn']} (tid {r['tid']})" for r in rows)
               or "No exports are recorded.")
    return exception.EXIT_OK


def cmd_list(args, ctx) -> int:
    rows = [{"volume_id": e.volume_id, "iqn": e.iqn, "helper": e.helper, "tid": e.tid,
             "path": e.path, "portal": e.portals[0]} for e in _store().all()]
    text = "\n".join(f"{r['volume_id']}  {r['helper']}  tid {r['tid']}  {r['iqn']}  "
                     f"{r['portal']}  {r['path']}" for r in rows) or "No exports are recorded."
    ctx.output({"exports": rows}, text)
    return exception.EXIT_OK


def cmd_show(args, ctx) -> int:
    export = _store().load(args.volume_id)
    if export is None:
        raise exception.ExportNotFound(volume_id=args.volume_id)
    record = export.public(show_secrets=args.show_secrets)
    ctx.output(record, "\n".join(f"{key}: {value}" for key, value in record.items()),
               reveal=args.show_secrets)
    return exception.EXIT_OK
