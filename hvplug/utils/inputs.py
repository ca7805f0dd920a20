"""The rules every value from outside meets before hvplug acts on it.

Input reaches hvplug as JSON documents (``--connection-info``) and as
command-line arguments.  Both are checked once, up front, by the rules here,
and a violation is :class:`~hvplug.exception.InvalidInput` (exit 2) naming
the key and the rule.  The rules follow what ends up in libvirt's XML, so
that what passes validates against libvirt's own schemas:

* text is UTF-8 and holds only characters XML 1.0 allows, and none of the
  control characters (C0, DEL, C1) nor U+2028/U+2029 -- a value is one line;
* numbers are integers (JSON numbers, or strings of ASCII digits: ``"²"``
  is a digit to ``str.isdigit`` but not a number) within a stated range;
* documents are at most :data:`MAX_DOCUMENT_BYTES` long, nested at most
  :data:`MAX_DEPTH` deep, with no duplicate keys and no ``NaN``/``Infinity``.

:func:`for_terminal` is the other side: whatever hvplug prints from input
(error messages, log lines) goes through it, so input can never forge a
line or send escape sequences to a terminal.

>>> number("7", "data.target_lun", 0, 16383)
7
>>> for_terminal("bad\\ninput")
'bad\\\\ninput'
"""

import json
import re
import sys
from collections.abc import Callable
from typing import Any

from hvplug import exception

MAX_DOCUMENT_BYTES = 64 << 20
MAX_DEPTH = 32
MAX_TEXT = 4096
MAX_ITEMS = 100_000
SHOWN_CHARS = 48  # how much of a bad value an error message quotes

# What a one-line value must not hold: the C0 controls, DEL and the C1
# controls, lone surrogates, the non-characters U+FFFE/U+FFFF (XML 1.0 cannot
# carry those) and the line and paragraph separators U+2028/U+2029.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u2028\u2029]")
_UNPRINTABLE = _CONTROL
_ASCII_DIGITS = re.compile("[0-9]+")


def for_terminal(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character, lone surrogate and
    non-character written as a Python escape (``\\n``, ``\\x1b``, ``\\udc80``),
    so it prints as it is, on the lines it has: input cannot add a line
    (``keep_newlines`` keeps real line breaks, for multi-line output hvplug
    built itself)."""
    def escape(match: re.Match) -> str:
        char = match.group()
        if keep_newlines and char in "\n\t":
            return char
        return repr(char)[1:-1]

    return _UNPRINTABLE.sub(escape, str(text))


def shown(value: Any) -> str:
    """A short, terminal-safe ``repr`` of a bad value for an error message."""
    text = repr(value)
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS - 5] + "...)" if isinstance(value, (list, dict)) \
            else text[:SHOWN_CHARS - 4] + "..." + text[-1]
    return for_terminal(text)


def type_name(value: Any) -> str:
    """The JSON name of ``value``'s type, as a user writing JSON knows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def bad(key: str, rule: str, value: Any = None, secret: bool = False,
        error: type[exception.InvalidInput] = exception.InvalidInput) -> exception.InvalidInput:
    """The error for ``key`` breaking ``rule``; a secret value is never quoted."""
    if secret:
        got = " (the value is not shown)"
    elif value is None:
        got = ""
    else:
        got = f", not {shown(value)}"
    return error(reason=f"{key} {rule}{got}")


# -- text ---------------------------------------------------------------------

def text(value: Any, key: str, *, max_len: int = MAX_TEXT, pattern: "re.Pattern[str] | None" = None,
         rule: str = "", secret: bool = False, allow_empty: bool = False,
         error: type[exception.InvalidInput] = exception.InvalidInput) -> str:
    """``value`` if it is a one-line string that XML can carry, else the error.

    ``pattern`` (matched whole) narrows the characters further, ``rule``
    says in words what it allows.
    """
    if not isinstance(value, str):
        raise bad(key, f"must be a string, not {type_name(value)}", secret=False, error=error)
    if not value and not allow_empty:
        raise bad(key, "must not be empty", error=error)
    if len(value) > max_len:
        raise bad(key, f"is {len(value)} characters long; at most {max_len} are allowed",
                  error=error)
    found = _CONTROL.search(value)
    if found:
        where = f"at position {found.start()}"
        raise bad(key, f"holds the control or non-character {for_terminal(repr(found.group()))} "
                  f"{where}; a value is one line of printable text", error=error)
    if pattern is not None and not pattern.fullmatch(value):
        raise bad(key, f"must be {rule}", value, secret=secret, error=error)
    return value


def number(value: Any, key: str, low: int, high: int,
           error: type[exception.InvalidInput] = exception.InvalidInput) -> int:
    """An integer from ``low`` to ``high``: a JSON integer or a string of
    ASCII digits (Cinder sends both for LUNs)."""
    rule = f"must be an integer from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise bad(key, rule, value, error=error)
    if isinstance(value, str):
        if not _ASCII_DIGITS.fullmatch(value) or len(value) > len(str(high)) + 8:
            raise bad(key, rule + " (ASCII digits)", value, error=error)
        value = int(value)
    if not low <= value <= high:
        raise bad(key, rule, value if abs(value) < 10 ** 30 else f"{str(value)[:12]}...",
                  error=error)
    return value


def boolean(value: Any, key: str,
            error: type[exception.InvalidInput] = exception.InvalidInput) -> bool:
    """A JSON ``true`` or ``false`` (a string such as ``"false"`` is refused:
    it would read as true)."""
    if not isinstance(value, bool):
        raise bad(key, "must be true or false (a JSON boolean)", value, error=error)
    return value


def choice(value: Any, key: str, allowed: tuple[str, ...],
           error: type[exception.InvalidInput] = exception.InvalidInput) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise bad(key, "must be one of " + ", ".join(repr(a) for a in allowed), value,
                  error=error)
    return value


def items(value: Any, key: str, each: Callable[[Any, str], Any], *, max_items: int = MAX_ITEMS,
          allow_empty: bool = True,
          error: type[exception.InvalidInput] = exception.InvalidInput) -> list:
    """``value`` as a list, every item checked by ``each(item, "key[i]")``."""
    if not isinstance(value, list):
        raise bad(key, f"must be a list, not {type_name(value)}", error=error)
    if len(value) > max_items:
        raise bad(key, f"has {len(value)} items; at most {max_items} are allowed", error=error)
    if not value and not allow_empty:
        raise bad(key, "must not be empty", error=error)
    return [each(item, f"{key}[{index}]") for index, item in enumerate(value)]


# -- documents ----------------------------------------------------------------

def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    document: dict = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"the key {shown(key)} appears twice in one object")
        document[key] = value
    return document


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep ``value`` nests (a scalar is 0), counting at most ``limit + 1``."""
    deepest, level = 0, [(value, 0)]
    while level:
        node, at = level.pop()
        deepest = max(deepest, at)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            level.extend((child, at + 1) for child in node.values())
        elif isinstance(node, list):
            level.extend((child, at + 1) for child in node)
    return deepest


def json_document(raw: bytes, source: str,
                  error: type[exception.InvalidInput] = exception.InvalidInput) -> Any:
    """Parse ``raw`` (the bytes of ``source``) as one JSON document, strictly.

    UTF-8 (a byte-order mark is allowed), at most :data:`MAX_DOCUMENT_BYTES`
    long and :data:`MAX_DEPTH` deep; no duplicate keys, no ``NaN``.
    """
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise error(reason=f"{source} is {len(raw)} bytes long; at most "
                    f"{MAX_DOCUMENT_BYTES} are read")
    try:
        text_ = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(reason=f"{source} is not UTF-8 text (byte {exc.start} is "
                    f"0x{raw[exc.start]:02x}); save it as UTF-8") from None
    try:
        document = json.loads(text_, parse_constant=_no_constants,
                              object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise error(reason=f"malformed JSON in {source}: {exc.msg} at line {exc.lineno} "
                    f"column {exc.colno}") from None
    except RecursionError:
        raise error(reason=f"{source} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # an over-long integer, NaN, a duplicate key
        reason = ("holds a number of more than 4300 digits" if "digits" in str(exc)
                  else str(exc))
        raise error(reason=f"{source}: {for_terminal(reason)}") from None
    if depth(document) > MAX_DEPTH:
        raise error(reason=f"{source} nests deeper than {MAX_DEPTH} levels")
    return document


def read_bytes(path: str, what: str,
               error: type[exception.InvalidInput] = exception.InvalidInput) -> bytes:
    """The bytes of file ``path`` (``-``: standard input), for option ``what``."""
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text stream put in place of stdin (a caller, a test)
            return sys.stdin.read(MAX_DOCUMENT_BYTES + 1).encode("utf-8", "surrogatepass")
        return stream.read(MAX_DOCUMENT_BYTES + 1)
    try:
        with open(path, "rb") as f:
            return f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise error(reason=f"cannot read {what} {shown(path)}: "
                    f"{exc.strerror or exc}") from None


# -- command-line arguments ---------------------------------------------------

def check_arguments(args: Any) -> None:
    """Every text argument of a parsed command line is one printable line.

    argparse has checked choices and types; this refuses what it lets
    through: control characters, and bytes that are not UTF-8 (Python
    carries them as lone surrogates).
    """
    for dest, value in sorted(vars(args).items()):
        values = value if isinstance(value, list) else [value]
        for each in values:
            if isinstance(each, str):
                text(each, "--" + dest.replace("_", "-"), allow_empty=True)
