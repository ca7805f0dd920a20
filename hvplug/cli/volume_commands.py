"""``hvplug volume --backend B ...``: volumes on a storage backend.

The backend is a section named in ``[DEFAULT] enabled_backends``::

    hvplug volume --backend ise1 create vol1 --size 10
    hvplug volume --backend ise1 connection-info vol1 | hvplug attach GUEST --connection-info -

``connection-info`` presents the volume to an initiator (this host's iSCSI
IQN or FC WWPNs unless given) and prints the connection_info that
``hvplug attach`` accepts, CHAP password included; the backend's
san_password is never printed.
"""

import argparse
import json
import sys

from hvplug import exception


def _size(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size in GB (a positive integer)")
    return int(value)


def register(commands, common: argparse.ArgumentParser) -> None:
    volume = commands.add_parser("volume", parents=[common],
                                 help="manage volumes on a storage backend (X-IO ISE)")
    volume.add_argument("--backend", required=True, metavar="B",
                        help="backend section named in [DEFAULT] enabled_backends")
    sub = volume.add_subparsers(dest="volume_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, func, help_: str, *args: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[common], help=help_)
        for arg in args:
            parser.add_argument(arg)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(func=func)
        return parser

    add("create", cmd_create, "create a volume", "name").add_argument(
        "--size", type=_size, required=True, metavar="GB")
    add("delete", cmd_delete, "delete a volume", "name")
    add("snapshot-create", cmd_snapshot_create, "snapshot a volume", "volume", "snapshot")
    add("snapshot-delete", cmd_delete, "delete a snapshot", "name")
    add("create-from-snapshot", cmd_from_snapshot, "create a volume from a snapshot",
        "snapshot", "name")
    add("clone", cmd_clone, "clone a volume", "source", "name")
    add("extend", cmd_extend, "grow a volume", "name").add_argument(
        "--size", type=_size, required=True, metavar="GB")
    add("stats", cmd_stats, "capacity of the backend and its pools")
    copy_in = add("copy-image", cmd_copy_image,
                  "write a local raw or qcow2 image into a volume (iSCSI)", "image", "name")
    copy_out = add("copy-to-image", cmd_copy_to_image,
                   "write a volume into a new local image (iSCSI)", "name", "image")
    copy_out.add_argument("--format", choices=("raw", "qcow2"), default="raw")
    for parser in (copy_in, copy_out):
        parser.add_argument("--initiator", metavar="IQN",
                            help="iSCSI initiator qemu-img logs in as (default: this host's)")
        parser.set_defaults(wwpn=None)
    for name, func, help_ in (
            ("connection-info", cmd_connection_info,
             "present a volume; print the connection_info 'hvplug attach' accepts"),
            ("terminate-connection", cmd_terminate, "unpresent a volume from an initiator")):
        parser = add(name, func, help_, "name")
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--initiator", metavar="IQN",
                         help="iSCSI initiator (default: this host's)")
        who.add_argument("--wwpn", action="append", metavar="WWPN",
                         help="FC initiator port, repeatable (default: this host's)")


def _driver(args, ctx):
    from hvplug.conf import backends

    driver = backends.load_driver(args.backend)
    ctx.secrets.append(driver.conf.san_password or "")
    return driver


def connector(args, driver) -> dict:
    """What identifies this initiator to the array: this host's
    ``connector_properties`` (hvplug.initiator.connectors), narrowed to the
    backend's protocol, ``--wwpn``/``--initiator`` instead where given."""
    from hvplug.initiator.connectors.base import connector_properties

    here = connector_properties()
    result = {"host": here["host"]}
    if driver.driver_volume_type == "fibre_channel":
        wwpns = args.wwpn or here.get("wwpns")
        if not wwpns:
            raise exception.InvalidInput(
                reason="this host has no FC ports (/sys/class/fc_host); give --wwpn "
                "(copies need this host's own HBAs)")
        return {**result, "wwpns": wwpns}
    if args.wwpn:
        raise exception.InvalidInput(
            reason=f"backend {args.backend} speaks iSCSI; give --initiator, not --wwpn")
    if not args.initiator and "initiator" not in here:
        from hvplug.connection_schema import initiator_name
        initiator_name()  # raises the error that says why there is none
    return {**result, "initiator": args.initiator or here["initiator"]}


def _show(ctx, record: dict) -> None:
    ctx.output(record, "\n".join(f"{key}: {value}" for key, value in record.items()))


def cmd_create(args, ctx) -> int:
    _show(ctx, _driver(args, ctx).create_volume(args.name, args.size))
    return exception.EXIT_OK


def cmd_delete(args, ctx) -> int:
    _driver(args, ctx).delete_volume(args.name)
    ctx.output({"name": args.name, "deleted": True}, f"Deleted {args.name}")
    return exception.EXIT_OK


def cmd_snapshot_create(args, ctx) -> int:
    _show(ctx, _driver(args, ctx).create_snapshot(args.volume, args.snapshot))
    return exception.EXIT_OK


def cmd_from_snapshot(args, ctx) -> int:
    _show(ctx, _driver(args, ctx).create_volume_from_snapshot(args.snapshot, args.name))
    return exception.EXIT_OK


def cmd_clone(args, ctx) -> int:
    _show(ctx, _driver(args, ctx).create_cloned_volume(args.source, args.name))
    return exception.EXIT_OK


def cmd_extend(args, ctx) -> int:
    _show(ctx, _driver(args, ctx).extend_volume(args.name, args.size))
    return exception.EXIT_OK


def cmd_stats(args, ctx) -> int:
    stats = _driver(args, ctx).get_volume_stats()
    lines = [f"{k}: {v}" for k, v in stats.items() if k != "pools"]
    lines += [f"pool {p['pool_name']}: {p['free_capacity_gb']} of "
              f"{p['total_capacity_gb']} GB free" for p in stats["pools"]]
    ctx.output(stats, "\n".join(lines))
    return exception.EXIT_OK


def cmd_connection_info(args, ctx) -> int:
    driver = _driver(args, ctx)
    info = driver.initialize_connection(args.name, connector(args, driver))
    ctx.output(info, json.dumps(info, indent=2), reveal=True)
    return exception.EXIT_OK


def cmd_terminate(args, ctx) -> int:
    driver = _driver(args, ctx)
    driver.terminate_connection(args.name, connector(args, driver))
    ctx.output({"name": args.name, "terminated": True},
               f"Unpresented {args.name}")
    return exception.EXIT_OK


def _copy_connector(args, driver) -> dict:
    """iSCSI: qemu-img logs in as this host; FC: this host's HBAs attach it."""
    return connector(args, driver)


def _progress(args):
    """Progress on stderr (stdout stays clean for --json), one line per 10%."""
    shown = [-10.0]

    def report(done: float) -> None:
        if done - shown[0] >= 10 or (done == 100 and shown[0] < 100):
            print(f"copy: {done:.0f}%", file=sys.stderr, flush=True)
            shown[0] = done
    return report


def cmd_copy_image(args, ctx) -> int:
    driver = _driver(args, ctx)
    driver.copy_image_to_volume(args.image, args.name, _copy_connector(args, driver),
                                progress=_progress(args))
    ctx.output({"image": args.image, "name": args.name, "copied": True},
               f"Copied {args.image} into {args.name}")
    return exception.EXIT_OK


def cmd_copy_to_image(args, ctx) -> int:
    driver = _driver(args, ctx)
    driver.copy_volume_to_image(args.name, args.image, args.format,
                                _copy_connector(args, driver), progress=_progress(args))
    ctx.output({"name": args.name, "image": args.image, "format": args.format,
                "copied": True}, f"Copied {args.name} into {args.image} ({args.format})")
    return exception.EXIT_OK
