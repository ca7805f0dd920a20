"""doc/configuration.md must be what tools/gen-config-doc generates now."""

import difflib
import importlib.machinery
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "gen-config-doc"


def load_tool():
    """tools/gen-config-doc as a module (its name has no .py, so load it by path)."""
    loader = importlib.machinery.SourceFileLoader("gen_config_doc", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_configuration_doc_is_current():
    tool = load_tool()
    wanted = tool.render()
    current = tool.DOC.read_text() if tool.DOC.exists() else ""
    if current != wanted:
        diff = "".join(list(difflib.unified_diff(
            current.splitlines(keepends=True), wanted.splitlines(keepends=True),
            fromfile="doc/configuration.md", tofile="generated"))[:60])
        raise AssertionError(
            "doc/configuration.md is stale (an option, its help or its default "
            "changed). Regenerate it with 'tools/gen-config-doc' and commit the "
            f"result.\n{diff}")


def test_check_mode_exit_codes(tmp_path):
    tool = load_tool()
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    assert tool.main(["--check", "--output", str(stale)]) == 1
    assert stale.read_text() == "old\n"
    assert tool.main(["--output", str(stale)]) == 0
    assert tool.main(["--check", "--output", str(stale)]) == 0


def test_every_option_is_in_the_table():
    from hvplug.conf.opts import list_opts

    text = load_tool().render()
    for group, opts in list_opts():
        assert f"## [{group.name}]" in text
        for opt in opts:
            assert f"| `{opt.dest}` |" in text
            assert f"#{opt.dest} =" in text  # the sample line (an empty default has no space)
