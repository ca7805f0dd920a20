"""``parse_arguments`` builds the parser of the named command only; what it
prints, exits with and returns must be what the whole parser
(``build_parser()``) gives, for every command and subcommand."""

import argparse
import contextlib
import io

import pytest

from hvplug.cli import main as cli


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _paths(parser=None, prefix=()):
    """Every command path of the whole parser: ("attach",), ("target", "list"), ..."""
    parser = parser or cli.build_parser()
    for name, sub in _subcommands(parser).items():
        yield (*prefix, name)
        yield from _paths(sub, (*prefix, name))


def _outcome(parse, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result = vars(parse(argv))  # func: the same function either way
        except SystemExit as exc:
            result = {"exit": exc.code}
    return result, out.getvalue(), err.getvalue()


def _whole(argv):
    return cli.build_parser().parse_args(argv)


PATHS = list(_paths())


def test_every_command_is_found():
    assert {path[0] for path in PATHS} == set(cli.command_names())
    assert ("attach",) in PATHS and ("target", "create-export") in PATHS


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
@pytest.mark.parametrize("tail", [["--help"], [], ["--no-such-option"]],
                         ids=["help", "bare", "unknown"])
def test_same_as_the_whole_parser(path, tail):
    argv = [*path, *tail]
    assert _outcome(cli.parse_arguments, argv) == _outcome(_whole, argv)


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["-h", "attach"], ["no-such-command"], ["--debug"],
    ["--connect"], ["--config-file", "x"], ["--conf", "x", "attach", "--domain", "g"],
    ["--debug", "detach", "--domain", "g", "--dev", "sda", "--dev", "sdb"],
    ["--connect", "qemu:///system", "attach", "--domain", "g", "--connection-info", "-",
     "--bus", "scsi", "--json", "--debug"],
    ["attach", "--domain", "g", "--bus", "nope"],
    ["attach", "--domain", "g", "extra"],
    ["detach", "--domain", "g", "--dev", "sda", "--connection-info", "f"],
    ["target", "show"], ["volume", "--backend", "b", "create", "v", "--size", "1"],
    ["attach", "--domain", "attach", "--connection-info", "detach"],
])
def test_same_namespace_output_and_exit(argv):
    assert _outcome(cli.parse_arguments, argv) == _outcome(_whole, argv)


def test_a_command_parses_without_the_others_built(monkeypatch):
    built = []
    real = argparse._SubParsersAction.add_parser
    monkeypatch.setattr(argparse._SubParsersAction, "add_parser",
                        lambda self, name, **kw: built.append(name) or real(self, name, **kw))
    args = cli.parse_arguments(["attach", "--domain", "g", "--connection-info", "f"])
    assert (args.command, args.domain, args.connection_info) == ("attach", "g", ["f"])
    assert built == ["attach"]
