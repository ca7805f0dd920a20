"""``hvplug iface ...``: open-iscsi iface records for offload HBAs and iSER.

``list``, ``show NAME``, ``create``, ``delete NAME`` and ``generate`` run
``iscsiadm -m iface``; ``--sysfs-root DIR`` reads hardware from a sysfs tree
other than ``/sys``.  ``--dry-run`` (create, delete, generate) prints the
iscsiadm commands that would write records instead of running them; the
reads they depend on still run.

Exit codes: 0 ok; 1 the operation failed (no such record, hardware missing,
iscsiadm refused); 2 bad input (unknown transport, malformed MAC).

JSON shapes (``--json``); an iface is ``{"name", "transport", "hwaddress",
"ipaddress", "net_ifacename", "initiatorname"}`` with null for unset fields:

- list: ``{"ifaces": [iface + {"usable": bool, "problem": str|null}]}``
- show: ``{"iface": iface + {"usable", "problem"}, "record": {"iface.KEY": "VALUE"}}``
- create: ``{"name", "action": "created"|"reused", "record": iface,
  "hardware": str|null, "problem": str|null, "dry_run": bool, "commands": [str]}``
  (with --dry-run ``action`` is "would create"/"reused"; ``problem`` says why
  the hardware is missing, and the exit code is then 1)
- ``commands`` everywhere: the iscsiadm commands that wrote records (with
  --dry-run: would write), shell-quoted
- delete: ``{"name", "deleted": true, "dry_run": bool, "commands": [str]}``
- generate: ``{"ifaces": [{"name", "transport", "hwaddress", "host",
  "ipaddress"?}], "dry_run": bool, "commands": [str]}``
- any failure: ``{"error": {"type", "message", "exit_code"}}``
"""

import argparse
import shlex
import sys
from typing import TYPE_CHECKING

from hvplug import exception
from hvplug.conf.choices import ISCSI_TRANSPORTS as TRANSPORTS

if TYPE_CHECKING:  # the initiator layer is imported when a command runs
    from hvplug.initiator.iface import IfaceManager


def _common(parser: argparse.ArgumentParser, dry_run: bool = False) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--sysfs-root", metavar="DIR", default="/sys",
                        help="read the hardware from this sysfs tree (default /sys)")
    if dry_run:
        parser.add_argument("--dry-run", action="store_true",
                            help="print the iscsiadm commands that would write records; "
                            "run nothing that writes")


def register(commands, common: argparse.ArgumentParser) -> None:
    iface = commands.add_parser("iface", parents=[common],
                                help="open-iscsi iface records (offload HBAs, iSER)")
    sub = iface.add_subparsers(dest="iface_command", metavar="SUBCOMMAND", required=True)

    list_ = sub.add_parser("list", parents=[common],
                           help="list iface records and whether each is usable now")
    _common(list_)
    list_.set_defaults(func=cmd_list)

    show = sub.add_parser("show", parents=[common], help="show one iface record")
    show.add_argument("name", metavar="NAME")
    _common(show)
    show.set_defaults(func=cmd_show)

    create = sub.add_parser(
        "create", parents=[common],
        help="create the record <transport>.<hwaddress> (reused if it already matches)")
    create.add_argument("--transport", required=True, metavar="T",
                        help=f"one of {', '.join(TRANSPORTS)}")
    create.add_argument("--hwaddress", metavar="MAC",
                        help="the adapter's MAC (needed for offload transports)")
    create.add_argument("--ipaddress", metavar="IP", help="the adapter's own IP address")
    create.add_argument("--net-ifacename", metavar="DEV", help="bind to this network device")
    create.add_argument("--name", help="record name (default <transport>.<hwaddress>)")
    _common(create, dry_run=True)
    create.set_defaults(func=cmd_create)

    delete = sub.add_parser(
        "delete", parents=[common],
        help="delete a record (iscsiadm also logs out sessions bound to it and deletes "
        "their node records)")
    delete.add_argument("name", metavar="NAME")
    _common(delete, dry_run=True)
    delete.set_defaults(func=cmd_delete)

    generate = sub.add_parser(
        "generate", parents=[common],
        help="create the records iscsiadm makes for every offload HBA in sysfs")
    _common(generate, dry_run=True)
    generate.set_defaults(func=cmd_generate)


def _manager(args) -> "IfaceManager":
    from hvplug.initiator.iface import IfaceManager

    return IfaceManager(sysfs_root=args.sysfs_root, dry_run=getattr(args, "dry_run", False))


def _commands(manager) -> list[str]:
    return [shlex.join(cmd) for cmd in manager.writes]


def _fields(iface: dict) -> str:
    return "  ".join(iface[key] or "-" for key in
                     ("name", "transport", "hwaddress", "ipaddress", "net_ifacename"))


def cmd_list(args, ctx) -> int:
    manager = _manager(args)
    rows = []
    for iface in manager.list():
        problem = manager.record_problem(iface)
        rows.append({**iface.to_dict(), "usable": problem is None, "problem": problem})
    text = "\n".join(f"{_fields(r)}  " + ("usable" if r["usable"] else f"UNUSABLE: {r['problem']}")
                     for r in rows)
    ctx.output({"ifaces": rows}, text or "No iface records.")
    return exception.EXIT_OK


def cmd_show(args, ctx) -> int:
    manager = _manager(args)
    iface = manager.show(args.name)
    if iface is None:
        raise exception.IfaceNotFound(name=args.name)
    problem = manager.record_problem(iface)
    summary = {**iface.to_dict(), "usable": problem is None, "problem": problem}
    lines = [f"{key}: {value if value is not None else '-'}"
             for key, value in summary.items() if key not in ("usable", "problem")]
    lines.append("usable now: " + ("yes" if problem is None else f"no: {problem}"))
    lines += ["", "iscsiadm record:"] + [f"  {k} = {v}" for k, v in iface.record.items()]
    ctx.output({"iface": summary, "record": iface.record}, "\n".join(lines))
    return exception.EXIT_OK


def cmd_create(args, ctx) -> int:
    manager = _manager(args)
    wanted = manager.spec(args.transport, args.hwaddress, args.ipaddress,
                          args.net_ifacename, name=args.name)
    hardware = problem = None
    try:
        hardware = manager.verify_hardware(wanted.transport, wanted.hwaddress)
    except exception.IfaceHardwareNotFound as exc:
        if not args.dry_run:
            raise
        problem = exc
    name, action = manager.ensure(wanted.transport, wanted.hwaddress, wanted.ipaddress,
                                  wanted.net_ifacename, name=wanted.name, verify=False)
    if args.dry_run and action == "created":
        action = "would create"
    payload = {"name": name, "action": action, "record": wanted.to_dict(),
               "hardware": hardware, "problem": problem.message if problem else None,
               "dry_run": args.dry_run, "commands": _commands(manager)}
    ctx.output(payload, _create_text(payload))
    if problem is not None:
        print(f"hvplug: error: {problem.message}", file=sys.stderr)
        return problem.exit_code
    return exception.EXIT_OK


def _create_text(payload: dict) -> str:
    name, action = payload["name"], payload["action"]
    if action == "reused":
        lines = [f"iface record {name} already exists with these settings; nothing to do."]
    else:
        lines = [f"{'Would create' if payload['dry_run'] else 'Created'} iface record {name}:"]
        lines += [f"  {key} = {value}" for key, value in payload["record"].items()
                  if value is not None and key != "name"]
    if payload["commands"]:
        lines += ["by running:"] + [f"  {cmd}" for cmd in payload["commands"]]
    if payload["hardware"]:
        lines.append(f"hardware: {payload['hardware']}")
    return "\n".join(lines)


def cmd_delete(args, ctx) -> int:
    manager = _manager(args)
    if not manager.delete(args.name):
        raise exception.IfaceNotFound(name=args.name)
    commands = _commands(manager)
    text = (f"Would delete iface record {args.name} by running:\n  " + "\n  ".join(commands)
            if args.dry_run else f"Deleted iface record {args.name}.")
    ctx.output({"name": args.name, "deleted": not args.dry_run, "dry_run": args.dry_run,
                "commands": commands}, text)
    return exception.EXIT_OK


def cmd_generate(args, ctx) -> int:
    manager = _manager(args)
    names = manager.generate()
    records = [r for r in manager.hardware.offload_records() if r["name"] in names]
    commands = _commands(manager)
    lines = [f"{r['name']}  ({r['host']}, {r['transport']})" for r in records]
    if not lines:
        none = f"No offload iSCSI host under {args.sysfs_root}/class/iscsi_host; nothing to generate."
        lines = [none]
    if commands:
        lines += ["would run:" if args.dry_run else "written by hvplug:"]
        lines += [f"  {cmd}" for cmd in commands]
    ctx.output({"ifaces": records, "dry_run": args.dry_run, "commands": commands},
               "\n".join(lines))
    return exception.EXIT_OK
