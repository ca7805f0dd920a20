"""hvplug: plug iSCSI volumes into libvirt/QEMU guests, and export them.

Exit codes: 0 ok, 1 operation failed, 2 bad input.
"""

import argparse
import atexit
import gc
import json
import logging
import os
import sys
import threading
from typing import NoReturn

from hvplug import exception
from hvplug.cli import (
    guest_volumes,
    iface_commands,
    migrate_commands,
    reconcile_command,
    target_commands,
    volume_commands,
)
from hvplug.cli.context import Context
from hvplug.utils import inputs, interrupts

COMMAND_GROUPS = (guest_volumes, reconcile_command, migrate_commands, target_commands,
                  iface_commands, volume_commands)


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


class _Skipped:
    """The parser of a command this run does not parse: it takes every call
    a ``register()`` makes on it (and on what those return) and builds
    nothing."""

    def __getattr__(self, name: str):
        return self._take

    def _take(self, *args, **kwargs) -> "_Skipped":
        return self


class _Commands:
    """The subparsers action a ``register()`` adds its commands to, for a
    parser of command ``wanted``: ``ALL``, every command whole; None, every
    command by its name and help only (all that the top-level ``--help``
    lists and an 'invalid choice' error names); a name, that command alone.
    ``names`` collects every command's name."""

    def __init__(self, action, wanted: str | None):
        self.action, self.wanted = action, wanted
        self.names: list[str] = []

    def add_parser(self, name: str, **kwargs):
        self.names.append(name)
        if self.wanted in (ALL, name):
            return self.action.add_parser(name, **kwargs)
        if self.wanted is None:
            listed = {key: kwargs[key] for key in ("help", "aliases") if key in kwargs}
            self.action.add_parser(name, add_help=False, **listed)
        return _Skipped()


ALL = "*"  # build_parser(): the parser of every command


def build_parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The parser of ``command``: ``ALL``, every command; None, none (every
    command named, with its help); a command's name, that command only."""
    parser = ArgumentParser(
        prog="hvplug", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common_options(suppress=False)])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub_common = common_options(suppress=True)
    for group in COMMAND_GROUPS:
        group.register(_Commands(commands, command), sub_common)
    return parser


def command_names() -> list[str]:
    """The top-level commands, from the ``register()`` of every group."""
    names = _Commands(None, "")  # wants no command: builds nothing
    for group in COMMAND_GROUPS:
        group.register(names, None)
    return names.names


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """``argv`` (default ``sys.argv[1:]``) parsed as :func:`build_parser`'s
    whole parser would, with only the parser of the command it names built.

    When ``argv`` starts with a command's name, that is the command; else a
    first parse with every command's parser empty finds it, or ends with the
    top-level help or usage error exactly as the whole parser would.
    Building the parsers of all ~40 commands and subcommands was most of the
    time ``hvplug --help`` or an argument error took.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in command_names():
        command = argv[0]
    else:
        command = build_parser(None).parse_known_args(argv)[0].command
    return build_parser(command).parse_args(argv)


def load_config(config_files: list[str] | None) -> None:
    """Read the configuration and check every value now, not at first use.

    With ``--config-file`` only the named files are read (no
    ``hvplug.conf.d`` directories); without it, oslo.config's usual search
    for ``hvplug.conf`` (e.g. ``/etc/hvplug/hvplug.conf``) applies.
    """
    from hvplug.conf import CONF, oslo_cfg
    from hvplug.conf.opts import list_opts

    cfg = oslo_cfg()

    dirs: list[str] | None = [] if config_files else None
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
                                     reason=exc.get_error_message())  # type: ignore[attr-defined]
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


# How long the process's own command runs with the cyclic garbage collector
# off (see _collector_off_while_starting).
START_UP_SECONDS = 2.0


def _collector_off_while_starting() -> None:
    """Start-up creates ~25,000 objects the collector tracks that live
    until the exit (modules, classes, functions), and it walked them again
    and again as they came: ~9 ms in 40 collections of a CLI attach.
    Reference counting still frees everything else at once; a command that
    runs longer than ``START_UP_SECONDS`` gets the collector back."""
    gc.disable()
    timer = threading.Timer(START_UP_SECONDS, gc.enable)
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process's own command, not a test or a wrapper
        _collector_off_while_starting()
    args = parse_arguments(argv)
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
        if argv is None:
            # The process exits next: its memory goes back to the OS at once,
            # so the interpreter's exit need not free every module, class and
            # function one by one (the cycles among them), which took 15-40
            # ms of a CLI attach.  atexit handlers and thread joins still run.
            gc.freeze()


def _quick_exit(code: int) -> NoReturn:
    """End the process with ``code`` without the interpreter's teardown.

    Once :func:`main` has returned, the command's work is done: what is left
    of a normal exit is joining threads, the atexit handlers (logging's
    flush), flushing stdout and stderr, and freeing every module, class and
    function one by one, ~5 ms of a CLI attach.  This runs the handlers and
    the flushes and skips the freeing.  While any thread other than daemons
    is still alive, the normal exit (which joins it) is taken instead.
    """
    main_thread = threading.main_thread()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's
    if run_exit_handlers is None or any(t is not main_thread and not t.daemon and t.is_alive()
                                        for t in threading.enumerate()):
        sys.exit(code)
    run_exit_handlers()
    try:
        sys.stdout.flush()
    except OSError as exc:  # e.g. the reader of a pipe went away
        code = code or exception.EXIT_FAILED
        try:
            print(f"hvplug: error: could not write the output: {exc.strerror}",
                  file=sys.stderr)
        except OSError:
            pass
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def run() -> NoReturn:
    """The ``hvplug`` command."""
    _quick_exit(main())


if __name__ == "__main__":
    run()
