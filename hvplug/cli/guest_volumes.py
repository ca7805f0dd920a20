"""Commands on a guest's volumes: render, attach, detach, extend, list, verify.

``attach`` and ``detach`` take ``--connection-info`` more than once (bulk
mode): the volumes are handled in parallel, each on its own, and the JSON is
``{"domain", "ok", "volumes": [{"volume", "ok", "result", "error"}]}``; the
exit code is 1 if any volume failed.
"""

import argparse
import sys

from hvplug import exception
from hvplug.conf.choices import DISK_BUSES, DISK_DEVICES


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _disk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bus", choices=sorted(DISK_BUSES),
                        help="disk bus (default: [libvirt] disk_bus)")
    parser.add_argument("--dev", metavar="NAME",
                        help="target device name, e.g. sdb (default: the first free one)")
    parser.add_argument("--device", choices=DISK_DEVICES,
                        help="'disk', or 'lun' to pass the SCSI LUN through (bus scsi only; "
                        "default: [libvirt] disk_device)")


def _config_only_option(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--config-only", action="store_true",
                        help=f"{verb} the persistent configuration only, leaving a running "
                        "domain as it is (virsh's --config)")


def _size(value: str) -> int:
    """A size in bytes, or with a K/M/G/T suffix (powers of 1024)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number, unit = value[:-1], value[-1:].upper()
    if unit.isdigit():
        number, unit = value, ""
    if unit not in units or not number.isascii() or not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a size: a positive number of bytes, or with K, M, G or T")
    return int(number) * units[unit]


def _info_option(parser, required: bool = True) -> None:
    parser.add_argument("--connection-info", metavar="FILE", required=required,
                        help="connection_info JSON file, or - for stdin")


def _infos_option(parser) -> None:
    parser.add_argument("--connection-info", metavar="FILE", action="append",
                        help="connection_info JSON file, or - for stdin; repeat it "
                        "to handle many volumes in one call (bulk mode)")


def register(commands, common: argparse.ArgumentParser) -> None:
    render = commands.add_parser(
        "render", parents=[common], help="print the disk (and secret) XML of a volume")
    _info_option(render)
    _disk_options(render)
    _json_option(render)
    render.set_defaults(func=cmd_render)

    attach_ = commands.add_parser("attach", parents=[common], help="attach a volume to a domain")
    attach_.add_argument("--domain", required=True)
    _infos_option(attach_)
    _disk_options(attach_)
    attach_.add_argument("--persistent", action="store_true",
                         help="also add it to the domain's persistent configuration")
    _config_only_option(attach_, "add it to")
    attach_.add_argument("--passphrase-file", metavar="FILE",
                         help="file holding the LUKS passphrase of an encrypted volume "
                         "(encrypted: true), its bytes exactly; readable by its owner "
                         "only (default: the volume's file in [libvirt] volume_key_dir)")
    _json_option(attach_)
    attach_.set_defaults(func=cmd_attach)

    detach = commands.add_parser("detach", parents=[common], help="detach a volume")
    detach.add_argument("--domain", required=True)
    which = detach.add_mutually_exclusive_group(required=True)
    _infos_option(which)
    which.add_argument("--dev", metavar="NAME", action="append",
                       help="target device name, e.g. sda (repeatable)")
    _config_only_option(detach, "remove it from")
    _json_option(detach)
    detach.set_defaults(func=cmd_detach)

    extend = commands.add_parser(
        "extend", parents=[common],
        help="tell a running domain that its volume grew (after the storage side grew it)")
    extend.add_argument("--domain", required=True)
    which = extend.add_mutually_exclusive_group(required=True)
    _info_option(which, required=False)
    which.add_argument("--dev", metavar="NAME", help="target device name, e.g. sda")
    extend.add_argument("--size", type=_size, metavar="SIZE",
                        help="the new size (bytes, or with K/M/G/T); default: read from the "
                        "target (which needs --connection-info for a CHAP volume)")
    _json_option(extend)
    extend.set_defaults(func=cmd_extend)

    list_ = commands.add_parser("list", parents=[common], help="list a domain's volumes")
    list_.add_argument("--domain", required=True)
    _json_option(list_)
    list_.set_defaults(func=cmd_list)

    verify = commands.add_parser(
        "verify", parents=[common], help="check each iSCSI disk's secret, portal, target and LUN")
    verify.add_argument("--domain", required=True)
    _json_option(verify)
    verify.set_defaults(func=cmd_verify)


def cmd_render(args, ctx) -> int:
    from hvplug.virt import attach
    info = ctx.read_connection_info(args.connection_info)
    rendered = attach.render(ctx.registry, info, bus=args.bus, dev=args.dev,
                             device=args.device)
    secrets = [xml for xml in (rendered.secret_xml, rendered.encryption_secret_xml) if xml]
    payload = {"driver": attach.class_path(rendered.driver), "disk_xml": rendered.disk_xml,
               "secret_xml": rendered.secret_xml}
    if rendered.encryption_secret_xml is not None:  # an encrypted volume's passphrase secret
        payload["encryption_secret_xml"] = rendered.encryption_secret_xml
    ctx.output(payload, "\n".join([rendered.disk_xml, *secrets]))
    return exception.EXIT_OK


def _read_infos(args, ctx) -> list[dict]:
    paths = args.connection_info or []
    if paths.count("-") > 1:
        raise exception.InvalidInput(reason="only one --connection-info can be - (stdin)")
    return [ctx.read_connection_info(path) for path in paths]


def _attach_text(result: dict) -> str:
    if result["promoted"]:
        return (f"Volume already attached live to domain '{result['domain']}' as "
                f"{result['dev']}; added it to the persistent configuration")
    return (f"Attached to domain '{result['domain']}' as {result['dev']} (bus {result['bus']})"
            + (f" through portal {result['portal']}" if result["portal"] else "")
            + (f", CHAP secret {result['secret_uuid']}" if result["secret_uuid"] else "")
            + (" (live and persistent config)" if result["persistent"] and result["live"]
               else " (persistent config)" if result["persistent"] else ""))


def _detach_text(result: dict) -> str:
    places = " and ".join(p for p, on in (("live", result["live"]),
                                          ("persistent config", result["persistent"])) if on)
    layer = ("" if result["layer"] == "the source"
             else f"; the volume was {result['layer']}, which left with the disk")
    return f"Detached {result['dev']} from domain '{result['domain']}' ({places}){layer}"


def _bulk_output(ctx, domain: str, outcomes, describe) -> int:
    ok = all(o.ok for o in outcomes)
    lines = [f"{o.volume}: " + (describe(o.result) if o.ok else f"FAILED: {o.error['message']}")
             for o in outcomes]
    ctx.output({"domain": domain, "ok": ok, "volumes": [o.to_dict() for o in outcomes]},
               "\n".join(lines))
    for o in outcomes:
        if not o.ok:
            print(f"hvplug: error: {o.volume}: {o.error['message']}", file=sys.stderr)
    return exception.EXIT_OK if ok else exception.EXIT_FAILED


def _passphrase(args) -> bytes | None:
    """The bytes of ``--passphrase-file``, if given (never printed)."""
    if not args.passphrase_file:
        return None
    from hvplug.virt import encryption
    return encryption.read_passphrase_file(args.passphrase_file)


def cmd_attach(args, ctx) -> int:
    from hvplug.virt import attach
    infos = _read_infos(args, ctx)
    passphrase = _passphrase(args)
    if len(infos) > 1:
        from hvplug.virt import bulk
        if args.dev:
            raise exception.InvalidInput(
                reason="--dev names one device; leave it out with several --connection-info")
        outcomes = bulk.attach_volumes(ctx.host, ctx.registry, args.domain, infos,
                                       bus=args.bus, persistent=args.persistent,
                                       passphrase=passphrase, config_only=args.config_only,
                                       device=args.device)
        return _bulk_output(ctx, args.domain, outcomes, _attach_text)
    if not infos:
        raise exception.InvalidInput(reason="give --connection-info FILE (or - for stdin)")
    result = attach.attach_volume(ctx.host, ctx.registry, args.domain, infos[0],
                                  bus=args.bus, dev=args.dev, persistent=args.persistent,
                                  passphrase=passphrase, config_only=args.config_only,
                                  device=args.device)
    ctx.output(result.to_dict(), _attach_text(result.to_dict()))
    return exception.EXIT_OK


def cmd_detach(args, ctx) -> int:
    from hvplug.virt import attach
    infos, devs = _read_infos(args, ctx), args.dev or []
    if len(infos) + len(devs) > 1:
        from hvplug.virt import bulk
        outcomes = bulk.detach_volumes(ctx.host, ctx.registry, args.domain, infos, devs,
                                       config_only=args.config_only)
        return _bulk_output(ctx, args.domain, outcomes, _detach_text)
    result = attach.detach_volume(ctx.host, ctx.registry, args.domain,
                                  connection_info=infos[0] if infos else None,
                                  dev=devs[0] if devs else None, config_only=args.config_only)
    ctx.output(result.to_dict(), _detach_text(result.to_dict()))
    return exception.EXIT_OK


def _bytes(size: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit} ({size} bytes)"
    return f"{size} bytes"


def cmd_extend(args, ctx) -> int:
    from hvplug.virt import extend
    info = ctx.read_connection_info(args.connection_info) if args.connection_info else None
    result = extend.extend_volume(ctx.host, ctx.registry, args.domain, connection_info=info,
                                  dev=args.dev, size=args.size)
    ctx.output(result.to_dict(), f"{result.dev} of domain '{result.domain}': "
               f"{_bytes(result.old_size)} -> {_bytes(result.new_size)}")
    return exception.EXIT_OK


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(row.get(c) if row.get(c) is not None else "-") for c in columns]
             for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def cmd_list(args, ctx) -> int:
    from hvplug.virt import inspect
    rows = inspect.volume_rows(ctx.host, args.domain)
    text = (_table(rows, ["dev", "layer", "bus", "protocol", "source", "portal", "secret_uuid"])
            if rows else f"Domain '{args.domain}' has no network or block volumes.")
    ctx.output({"domain": args.domain, "volumes": rows}, text)
    return exception.EXIT_OK


def cmd_verify(args, ctx) -> int:
    from hvplug.virt import inspect
    results = inspect.verify_volumes(ctx.host, args.domain)
    ok = all(r["ok"] for r in results)
    lines = [f"{r['dev']}{'' if r['layer'] == 'source' else ' (' + r['layer'] + ')'}: "
             f"{check['detail']} [{'ok' if check['ok'] else 'FAILED'}]"
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
