"""``hvplug reconcile``: repair what killed processes and other tools left.

Exit codes: 0 the host is right (after any repairs, or with nothing to do);
1 something is still wrong (a disk's secret is missing and no
``--connection-info`` of its volume was given, a lock was busy) or, with
``--dry-run``, something would change; 2 bad input.

JSON (``--json``): ``{"ok": bool, "dry_run": bool, "stale_locks_removed": int,
"findings": [{"kind":
"orphan-secret"|"missing-secret", "secret_uuid", "secret_usage", "action",
"ok", "domain", "where", "dev", "source", "detail"}]}``.
"""

import argparse
import sys

from hvplug import exception


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "reconcile", parents=[common],
        help="remove orphan hvplug secrets; find (and re-create) missing ones",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", help="look for missing secrets on this domain only "
                        "(orphan secrets are looked for host-wide)")
    parser.add_argument("--dry-run", action="store_true",
                        help="report what would change; change nothing")
    parser.add_argument("--connection-info", metavar="FILE", action="append",
                        help="connection_info of a volume whose lost secret to re-create "
                        "(repeatable; - for stdin)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_reconcile)


def _line(finding) -> str:
    where = (f" on '{finding.domain}' ({finding.where}, {finding.dev or '-'})"
             if finding.domain else "")
    what = "orphan secret" if finding.kind == "orphan-secret" else "missing secret"
    name = finding.secret_uuid or f"with usage '{finding.secret_usage}'"
    detail = f": {finding.detail}" if finding.detail else ""
    return f"{what} {name} [{finding.source or '-'}]{where}: {finding.action}{detail}"


def cmd_reconcile(args, ctx) -> int:
    from hvplug.virt import reconcile

    paths = args.connection_info or []
    if paths.count("-") > 1:
        raise exception.InvalidInput(reason="only one --connection-info can be - (stdin)")
    infos = [ctx.read_connection_info(path) for path in paths]
    for index, info in enumerate(infos, 1):
        try:
            reconcile.check_info(ctx.registry, info)
        except exception.InvalidInput as exc:
            raise type(exc)(f"connection_info #{index}: {exc.message}") from None
    report = reconcile.reconcile(ctx.host, ctx.registry, domain=args.domain,
                                 dry_run=args.dry_run, connection_infos=infos)
    findings = report.findings
    text = "\n".join(_line(f) for f in findings) or "Nothing to reconcile: the host is right."
    if report.stale_locks_removed:
        text += (f"\nRemoved {report.stale_locks_removed} lock file(s) left by killed "
                 "hvplug processes.")
    ctx.output({"ok": report.ok, "dry_run": args.dry_run,
                "stale_locks_removed": report.stale_locks_removed,
                "findings": [f.to_dict() for f in findings]}, text)
    changes = args.dry_run and any(f.action.startswith("would") for f in findings)
    for finding in findings:
        if not finding.ok:
            print(f"hvplug: error: {_line(finding)}", file=sys.stderr)
    return exception.EXIT_OK if report.ok and not changes else exception.EXIT_FAILED
