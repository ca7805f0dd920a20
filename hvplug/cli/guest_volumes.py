"""Commands on a guest's volumes: render, attach, detach, list, verify."""

import argparse
import sys

from hvplug import exception
from hvplug.virt import attach, inspect
from hvplug.virt.guest_disks import BUS_PREFIXES


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _disk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bus", choices=sorted(BUS_PREFIXES),
                        help="disk bus (default: [libvirt] disk_bus)")
    parser.add_argument("--dev", metavar="NAME",
                        help="target device name, e.g. sdb (default: the first free one)")


def _info_option(parser, required: bool = True) -> None:
    parser.add_argument("--connection-info", metavar="FILE", required=required,
                        help="connection_info JSON file, or - for stdin")


def register(commands, common: argparse.ArgumentParser) -> None:
    render = commands.add_parser(
        "render", parents=[common], help="print the disk (and secret) XML of a volume")
    _info_option(render)
    _disk_options(render)
    _json_option(render)
    render.set_defaults(func=cmd_render)

    attach_ = commands.add_parser("attach", parents=[common], help="attach a volume to a domain")
    attach_.add_argument("--domain", required=True)
    _info_option(attach_)
    _disk_options(attach_)
    attach_.add_argument("--persistent", action="store_true",
                         help="also add it to the domain's persistent configuration")
    _json_option(attach_)
    attach_.set_defaults(func=cmd_attach)

    detach = commands.add_parser("detach", parents=[common], help="detach a volume")
    detach.add_argument("--domain", required=True)
    which = detach.add_mutually_exclusive_group(required=True)
    which.add_argument("--connection-info", metavar="FILE",
                       help="connection_info JSON file, or - for stdin")
    which.add_argument("--dev", metavar="NAME", help="target device name, e.g. sda")
    _json_option(detach)
    detach.set_defaults(func=cmd_detach)

    list_ = commands.add_parser("list", parents=[common], help="list a domain's volumes")
    list_.add_argument("--domain", required=True)
    _json_option(list_)
    list_.set_defaults(func=cmd_list)

    verify = commands.add_parser(
        "verify", parents=[common], help="check each iSCSI disk's secret and portal")
    verify.add_argument("--domain", required=True)
    _json_option(verify)
    verify.set_defaults(func=cmd_verify)


def cmd_render(args, ctx) -> int:
    info = ctx.read_connection_info(args.connection_info)
    driver, disk_xml, secret_xml = attach.render_volume(
        ctx.registry, info, bus=args.bus, dev=args.dev)
    ctx.output({"driver": attach.class_path(driver), "disk_xml": disk_xml,
                "secret_xml": secret_xml},
               disk_xml + (f"\n{secret_xml}" if secret_xml else ""))
    return exception.EXIT_OK


def cmd_attach(args, ctx) -> int:
    info = ctx.read_connection_info(args.connection_info)
    result = attach.attach_volume(ctx.host, ctx.registry, args.domain, info,
                                  bus=args.bus, dev=args.dev, persistent=args.persistent)
    text = (f"Attached to domain '{result.domain}' as {result.dev} (bus {result.bus})"
            + (f" through portal {result.portal}" if result.portal else "")
            + (f", CHAP secret {result.secret_uuid}" if result.secret_uuid else ""))
    ctx.output(result.to_dict(), text)
    return exception.EXIT_OK


def cmd_detach(args, ctx) -> int:
    info = ctx.read_connection_info(args.connection_info) if args.connection_info else None
    result = attach.detach_volume(ctx.host, ctx.registry, args.domain,
                                  connection_info=info, dev=args.dev)
    places = " and ".join(p for p, on in (("live", result.live),
                                          ("persistent config", result.persistent)) if on)
    ctx.output(result.to_dict(),
               f"Detached {result.dev} from domain '{result.domain}' ({places})")
    return exception.EXIT_OK


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(row.get(c) if row.get(c) is not None else "-") for c in columns]
             for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def cmd_list(args, ctx) -> int:
    rows = inspect.volume_rows(ctx.host, args.domain)
    text = (_table(rows, ["dev", "bus", "protocol", "source", "portal", "secret_uuid"])
            if rows else f"Domain '{args.domain}' has no network or block volumes.")
    ctx.output({"domain": args.domain, "volumes": rows}, text)
    return exception.EXIT_OK


def cmd_verify(args, ctx) -> int:
    results = inspect.verify_volumes(ctx.host, args.domain)
    ok = all(r["ok"] for r in results)
    lines = [f"{r['dev']}: {check['detail']} [{'ok' if check['ok'] else 'FAILED'}]"
             for r in results for check in r["checks"]]
    if not results:
        lines = [f"Domain '{args.domain}' has no iSCSI network disks to verify."]
    ctx.output({"domain": args.domain, "ok": ok, "disks": results}, "\n".join(lines))
    if not ok:
        failed = "; ".join(f"{r['dev']}: {c['detail']}" for r in results
                           for c in r["checks"] if not c["ok"])
        print(f"hvplug: error: verification of domain '{args.domain}' failed: {failed}",
              file=sys.stderr)
        return exception.EXIT_FAILED
    return exception.EXIT_OK
