"""hvplug: plug iSCSI volumes into libvirt/QEMU guests, and export them.

Exit codes: 0 ok, 1 operation failed, 2 bad input.
"""

import argparse
import json
import logging
import sys

from hvplug import exception
from hvplug.cli import (
    guest_volumes,
    iface_commands,
    reconcile_command,
    target_commands,
    volume_commands,
)
from hvplug.cli.context import Context
from hvplug.utils import inputs, interrupts

COMMAND_GROUPS = (guest_volumes, reconcile_command, target_commands, iface_commands,
                  volume_commands)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its usage errors printed terminal-safe: a bad argument
    is quoted with its control characters escaped, on one line (exit 2)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(exception.EXIT_BAD_INPUT,
                  f"{self.prog}: error: {inputs.for_terminal(message)}\n")


class TerminalSafeFormatter(logging.Formatter):
    """Log lines with input's control characters escaped (tracebacks of
    --debug keep their lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return inputs.for_terminal(super().formatMessage(record))


def common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before the command and after it."""
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config-file", action="append", metavar="PATH",
                        default=default,
                        help="configuration file (repeatable); default "
                        "/etc/hvplug/hvplug.conf when present")
    parser.add_argument("--connect", metavar="URI", default=default,
                        help="libvirt URI, overriding [libvirt] connection_uri")
    parser.add_argument("--debug", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="log debug detail and show tracebacks")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="hvplug", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common_options(suppress=False)])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub_common = common_options(suppress=True)
    for group in COMMAND_GROUPS:
        group.register(commands, sub_common)
    return parser


def load_config(config_files: list[str] | None) -> None:
    """Read the configuration and check every value now, not at first use.

    With ``--config-file`` only the named files are read (no
    ``hvplug.conf.d`` directories); without it, oslo.config's usual search
    for ``hvplug.conf`` (e.g. ``/etc/hvplug/hvplug.conf``) applies.
    """
    from oslo_config import cfg

    from hvplug.conf import CONF
    from hvplug.conf.opts import list_opts

    dirs = [] if config_files else None
    try:
        CONF(args=[], project="hvplug", prog="hvplug",
             default_config_files=config_files, default_config_dirs=dirs)
    except cfg.Error as exc:
        raise exception.ConfigFileError(reason=str(exc)) from None
    except OSError as exc:  # a directory, an unreadable file
        raise exception.ConfigFileError(
            reason=f"{inputs.shown(exc.filename)}: {exc.strerror}") from None
    for group, opts in list_opts():
        for opt in opts:
            try:
                getattr(getattr(CONF, group.name), opt.dest)
            except (cfg.Error, ValueError) as exc:
                detail = str(exc).rpartition("is not valid: ")[2]
                raise exception.ConfigFileError(
                    reason=f"[{group.name}] {opt.dest}: {detail}") from None


def report_error(exc: Exception, args, ctx: Context) -> int:
    if type(exc).__name__ == "libvirtError":  # a libvirt failure no layer translated
        exc = exception.LibvirtError(action=f"complete '{args.command}'",
                                     reason=exc.get_error_message())
    if isinstance(exc, exception.HvplugError):
        # Built from templates whose fields never hold a password.
        message, code = exc.message, exc.exit_code
    else:
        message = ctx.redact(f"unexpected {type(exc).__name__}: {exc} "
                             "(rerun with --debug for details)")
        code = exception.EXIT_FAILED
    if getattr(args, "json", False):
        print(json.dumps({"error": {"type": type(exc).__name__, "message": message,
                                    "exit_code": code}}))
    print(f"hvplug: error: {inputs.for_terminal(message)}", file=sys.stderr)
    if getattr(args, "debug", False):
        logging.getLogger(__name__).exception("traceback (from --debug)")
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(TerminalSafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        handlers=[handler])
    ctx = Context(args)
    previous = interrupts.install()
    try:
        inputs.check_arguments(args)
        load_config(args.config_file)
        code = args.func(args, ctx)
        late = interrupts.late_signal()
        if late:
            print(f"hvplug: {late} arrived after the operation had completed; its "
                  "result stands", file=sys.stderr)
        return code
    except KeyboardInterrupt as exc:
        name = getattr(exc, "signal_name", "SIGINT")
        left = getattr(exc, "rollback_left", None)
        what = ("what was under way was rolled back, so nothing is left half-done"
                if not left else "rolling back what was under way failed, so this is "
                "left behind: " + "; ".join(left) + " (see 'hvplug reconcile')")
        return report_error(exception.Interrupted(signal=name, what=what), args, ctx)
    except Exception as exc:  # noqa: BLE001 - every error reaches the user as one line
        return report_error(exc, args, ctx)
    finally:
        if argv is None:  # the process's own command: let it exit with its code
            interrupts.ignore()
        else:  # called in-process (tests, a wrapper): give the signals back
            interrupts.restore(previous)
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
