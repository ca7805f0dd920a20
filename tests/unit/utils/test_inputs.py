"""The generic input rules: strict JSON, one-line text, integers, terminal safety."""

import argparse
import json

import pytest

from hvplug import exception
from hvplug.utils import inputs


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"a": 1}', {"a": 1}),
    ('\ufeff{"a": [1, 2]}'.encode(), {"a": [1, 2]}),  # a byte-order mark is fine
])
def test_json_document_reads_utf8(raw, expected):
    assert inputs.json_document(raw, "f") == expected


@pytest.mark.parametrize(("raw", "says"), [
    (b'\xff\xfe{"a": 1}', "not UTF-8 text (byte 0 is 0xff)"),
    (b'{"a": ', "malformed JSON in f"),
    (b'{"a": NaN}', "NaN is not a JSON number"),
    (b'{"a": Infinity}', "Infinity is not a JSON number"),
    (b'{"a": 1, "a": 2}', "the key 'a' appears twice"),
    (b"[" * 100_000 + b"]" * 100_000, "nests deeper than 32 levels"),  # RecursionError
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nests deeper than 32 levels"),
    (b'{"a": ' + b"9" * 4301 + b"}", "more than 4300 digits"),
])
def test_json_document_refuses(raw, says):
    with pytest.raises(exception.InvalidInput) as err:
        inputs.json_document(raw, "f")
    assert says in err.value.message
    assert err.value.exit_code == exception.EXIT_BAD_INPUT


def test_json_document_refuses_oversized(monkeypatch):
    monkeypatch.setattr(inputs, "MAX_DOCUMENT_BYTES", 10)
    with pytest.raises(exception.InvalidInput, match="at most 10 are read"):
        inputs.json_document(b'{"a": "0123456789"}', "f")


@pytest.mark.parametrize("value", ["a\x00b", "a\nb", "a\rb", "a\tb", "\x1b[31m", "a\x7f",
                                   "a\x85", "\ud800", "a\udfff", "\ufffe", "\uffff", "a\u2028b",
                                   "\u2029"])
def test_text_refuses_controls_surrogates_and_noncharacters(value):
    with pytest.raises(exception.InvalidInput) as err:
        inputs.text(value, "data.k")
    assert "data.k holds the control or non-character" in err.value.message
    assert all(c.isprintable() for c in err.value.message)


def test_text_rules():
    assert inputs.text("ok \u00e9\U0001f600", "k") == "ok \u00e9\U0001f600"
    with pytest.raises(exception.InvalidInput, match="must be a string, not a number"):
        inputs.text(1, "k")
    with pytest.raises(exception.InvalidInput, match="must not be empty"):
        inputs.text("", "k")
    with pytest.raises(exception.InvalidInput, match="is 5 characters long; at most 4"):
        inputs.text("abcde", "k", max_len=4)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (16383, 16383), ("7", 7), ("0012", 12)])
def test_number_accepts(value, expected):
    assert inputs.number(value, "k", 0, 16383) == expected


@pytest.mark.parametrize("value", [-1, 16384, 2 ** 64 + 1, "²", "٣", "1.0", 1.0, True, None,
                                   "9" * 40, [], {}, " 8", "\r1", "-1", "+1"])
def test_number_refuses(value):
    with pytest.raises(exception.InvalidInput, match="k must be an integer from 0 to 16383"):
        inputs.number(value, "k", 0, 16383)


def test_boolean_refuses_strings():
    assert inputs.boolean(False, "k") is False
    with pytest.raises(exception.InvalidInput, match="must be true or false"):
        inputs.boolean("false", "k")


def test_items_checks_each_and_names_the_index():
    with pytest.raises(exception.InvalidInput, match=r"k\[1\] must be an integer"):
        inputs.items([1, "x"], "k", lambda v, key: inputs.number(v, key, 0, 9))
    with pytest.raises(exception.InvalidInput, match="k must be a list, not a string"):
        inputs.items("x", "k", lambda v, key: v)


def test_bad_never_quotes_a_secret():
    error = inputs.bad("data.auth_password", "is wrong", "hunter2", secret=True)
    assert "hunter2" not in error.message and "not shown" in error.message


def test_shown_is_short_and_safe():
    text = inputs.shown("x" * 500 + "\n")
    assert len(text) <= inputs.SHOWN_CHARS and "\n" not in text


@pytest.mark.parametrize(("raw", "printed"), [
    ("a\nhvplug: error: forged", "a\\nhvplug: error: forged"),
    ("\x1b[2J\x00", "\\x1b[2J\\x00"),
    ("\ud800", "\\ud800"),
    ("\u2028", "\\u2028"),
    ("plain é", "plain é"),
])
def test_for_terminal(raw, printed):
    assert inputs.for_terminal(raw) == printed


def test_for_terminal_can_keep_line_breaks():
    assert inputs.for_terminal("a\n\tb\x1b", keep_newlines=True) == "a\n\tb\\x1b"


def test_check_arguments_names_the_option():
    args = argparse.Namespace(domain="g\n1", json=False, connection_info=["ok", "b\x00"])
    with pytest.raises(exception.InvalidInput, match="--connection-info holds"):
        inputs.check_arguments(args)
    inputs.check_arguments(argparse.Namespace(domain="guest-1", dev=None, json=True))


def test_read_bytes_names_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(exception.InvalidInput, match="cannot read --connection-info"):
        inputs.read_bytes(str(missing), "--connection-info")
    (tmp_path / "ok.json").write_bytes(json.dumps({"a": 1}).encode())
    assert inputs.read_bytes(str(tmp_path / "ok.json"), "x") == b'{"a": 1}'
