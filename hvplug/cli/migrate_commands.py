"""``hvplug migrate``, ``migrate-prepare`` and ``migrate-abort``: live migration.

From the source, all in one (the destination's libvirt reached by URI)::

    hvplug migrate --domain G --to qemu+tcp://10.250.0.2/system \\
        --dest-initiator iqn.2026-12.org.example:host2 --connection-info dest-vol1.json

Split, for orchestrators that run a command on each host (Nova's
pre_live_migration on the destination, then the migration on the source)::

    dest$   hvplug migrate-prepare --domain G --connection-info vol1.json --json > prepared.json
    source$ hvplug migrate --domain G --to qemu+tcp://dest/system --prepared prepared.json
    dest$   hvplug migrate-abort --domain G --connection-info vol1.json   # if it did not happen

Progress (percent of guest memory transferred) goes to stderr.
"""

import argparse
import sys

from hvplug import exception


def register(commands, common: argparse.ArgumentParser) -> None:
    migrate = commands.add_parser(
        "migrate", parents=[common],
        help="live-migrate a domain and its volumes to another host")
    migrate.add_argument("--domain", required=True)
    migrate.add_argument("--to", required=True, metavar="URI",
                         help="the destination's libvirt URI, e.g. qemu+tcp://host2/system")
    migrate.add_argument("--dest-initiator", metavar="IQN",
                         help="the destination's iSCSI initiator IQN (its "
                         "/etc/iscsi/initiatorname.iscsi); not with --prepared")
    migrate.add_argument("--connection-info", metavar="FILE", action="append",
                         help="the connection_info the storage side gave for the "
                         "destination, once per volume (needed for CHAP volumes)")
    migrate.add_argument("--prepared", metavar="FILE",
                         help="what 'hvplug migrate-prepare --json' printed on the destination")
    migrate.add_argument("--migrate-uri", metavar="URI",
                         help="where QEMU sends the memory, e.g. tcp://10.250.0.2 "
                         "(default: libvirt's choice)")
    migrate.add_argument("--persistent", action="store_true",
                         help="the destination keeps the domain's definition; the source's goes")
    migrate.add_argument("--json", action="store_true", help="machine-readable output")
    migrate.set_defaults(func=cmd_migrate)

    for name, func, help_ in (
            ("migrate-prepare", cmd_prepare,
             "on the destination: connect a migrating domain's volumes here"),
            ("migrate-abort", cmd_abort,
             "on the destination: undo migrate-prepare when the migration did not happen")):
        parser = commands.add_parser(name, parents=[common], help=help_)
        parser.add_argument("--domain", required=True)
        parser.add_argument("--connection-info", metavar="FILE", action="append",
                            required=True, help="this host's connection_info of each volume")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(func=func)


def _infos(args, ctx) -> list[dict]:
    paths = args.connection_info or []
    if paths.count("-") > 1:
        raise exception.InvalidInput(reason="only one --connection-info can be - (stdin)")
    return [ctx.read_connection_info(path) for path in paths]


def _progress(domain: str):
    def report(percent: int) -> None:
        print(f"migrating {domain}: {percent}% of memory transferred", file=sys.stderr,
              flush=True)
    return report


def cmd_migrate(args, ctx) -> int:
    from hvplug.virt import migrate

    prepared = None
    if args.prepared:
        if args.dest_initiator or args.connection_info:
            raise exception.InvalidInput(
                reason="--prepared carries what the destination prepared; leave out "
                "--dest-initiator and --connection-info")
        from hvplug.utils import inputs
        raw = inputs.read_bytes(args.prepared, "--prepared")
        prepared = migrate.Prepared.from_dict(
            inputs.json_document(raw, inputs.shown(args.prepared)))
    result = migrate.migrate_domain(
        ctx.host, ctx.registry, args.domain, args.to, infos=_infos(args, ctx),
        dest_initiator=args.dest_initiator, persistent=args.persistent,
        migrate_uri=args.migrate_uri, prepared=prepared, progress=_progress(args.domain))
    lines = [f"Migrated domain '{result.domain}' to {result.destination} in "
             f"{result.seconds:.2f} s" + (" (persistent)" if result.persistent else "")]
    lines += [f"  {v['dev']}: volume {v['volume']}, secret {v['destination_secret_uuid']} there; "
              + ("source secret released" if v["source_released"]
                 else "source secret kept (still needed here)" if v["source_secret_uuid"]
                 else "no secret")
              for v in result.volumes]
    ctx.output(result.to_dict(), "\n".join(lines))
    return exception.EXIT_OK


def cmd_prepare(args, ctx) -> int:
    from hvplug.virt import migrate

    prepared = migrate.prepare(ctx.host, ctx.registry, args.domain, _infos(args, ctx))
    lines = [f"Prepared {len(prepared.volumes)} volume(s) of '{args.domain}' on this host "
             f"(initiator {prepared.initiator}); give 'migrate-prepare --json' to "
             "'hvplug migrate --prepared' on the source"]
    lines += [f"  {v.volume}: {v.source_name} through {v.portal}, secret {v.secret_uuid}"
              for v in prepared.volumes]
    ctx.output(prepared.to_dict(), "\n".join(lines))
    return exception.EXIT_OK


def cmd_abort(args, ctx) -> int:
    from hvplug.virt import migrate

    released = migrate.abort(ctx.host, ctx.registry, args.domain, _infos(args, ctx))
    ctx.output({"domain": args.domain, "released": released},
               f"Undid the preparation of {', '.join(released)} for '{args.domain}'")
    return exception.EXIT_OK
