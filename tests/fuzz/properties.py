"""What must hold for every ``hvplug render`` case, and how a case is run.

:func:`check` takes what a run gave (exit code, stdout, stderr) and returns
the properties it broke, each as ``(property, detail)``; an empty list is a
pass.  The properties:

- ``exit-code``: the exit code is 0 or 2 (render touches no host, so
  anything else is hvplug failing on its input);
- ``unexpected``: no ``Traceback`` and no ``unexpected <Error>:`` message;
- ``stderr-lines``: every stderr line has a known shape (``hvplug: error:``,
  argparse's ``usage:``/``hvplug render: error:``, a log line); at most one
  error line, exactly one on exit 2; so input cannot forge a second line;
- ``stderr-control``: no C0 control (the newline ending a line aside), DEL,
  C1 control or lone surrogate on stderr;
- ``stdout-control``: the same for stdout (tab and newline allowed), which
  a terminal shows too;
- ``password``: no generated password marker in stdout or stderr;
- ``json``: with ``--json``, stdout is one JSON document: the rendered
  ``{"driver", "disk_xml", "secret_xml"}`` on exit 0, ``{"error": ...}`` with
  the same exit code on exit 2;
- ``disk-schema``/``secret-schema``: on exit 0 the disk XML validates against
  libvirt's domain.rng, and a secret against secret.rng
  (:mod:`tests.xmlcheck`);
- ``fidelity``: on exit 0 the XML carries the input's values as given:
  ``<serial>`` is ``serial`` (else ``data.volume_id``), a block disk's
  ``<source dev>`` is ``data.device_path``, a network disk's source name is
  ``<target_iqn>/<lun>`` and ``<auth username>`` is ``data.auth_username``
  (nothing rewritten, escaped or dropped on the way);
  an iSCSI source name ends in a LUN from 0 to 2**64-1 (SCSI's 64-bit LUN;
  the schema takes any text there);
- ``output``: on exit 0 there is a disk; on exit 2 without ``--json`` stdout
  is empty.

:class:`InProcess` runs ``hvplug.cli.main.main(argv)`` with stdout, stderr
(and stdin) replaced by UTF-8 text streams that encode as a real process's
would (stdout strict, stderr ``backslashreplace``), and log records sent to
the current stderr as ``main``'s ``logging.basicConfig`` would.
:func:`run_subprocess` runs ``python -m hvplug.cli.main``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests import xmlcheck
from tests.fuzz.generator import CONFIGS, Case

REPO = Path(__file__).resolve().parents[2]

_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
_ERROR_LINE = "hvplug: error: "
_ARGPARSE_ERROR = re.compile(r"^hvplug( \w+)?: error: ")
_UNEXPECTED = re.compile(r"\bunexpected [A-Z]\w*: ")
_LATE_SIGNAL = re.compile(r"^hvplug: SIG\w+ arrived after")


def _bad_chars(text: str, allowed: str) -> list[str]:
    found = []
    for ch in text:
        code = ord(ch)
        if ch in allowed:
            continue
        control = code < 0x20 or code == 0x7F or 0x80 <= code <= 0x9F
        if (control or 0xD800 <= code <= 0xDFFF) and ch not in found:
            found.append(ch)
    return found


def _schema_detail(exc: AssertionError) -> str:
    """The first schema error, without line numbers: what categorises a failure."""
    lines = str(exc).splitlines()
    first = lines[1] if len(lines) > 1 else lines[0]
    first = re.sub(r"^.*?:\d+:\d+:\w+:\w+:\w+: ", "", first)
    return first[:160]


def _culprit(kind: str, xml: str) -> str:
    """What the schema rejects: the first attribute or element whose removal
    makes the XML valid (libxml2 names only the <interleave> it gave up in)."""
    import copy

    from lxml import etree
    check = xmlcheck.assert_valid_disk if kind == "disk" else xmlcheck.assert_valid_secret
    root = etree.fromstring(xml.encode("utf-8"))

    def valid(tree) -> bool:
        try:
            check(etree.tostring(tree, encoding="unicode"))
        except AssertionError:
            return False
        return True

    for index, element in enumerate(root.iter()):
        for name in element.attrib:
            for plain in (None, "x", "1"):  # dropped, or given a plain value
                trial = copy.deepcopy(root)
                node = list(trial.iter())[index]
                if plain is None:
                    node.attrib.pop(name)
                else:
                    node.set(name, plain)
                if valid(trial):
                    return f"<{element.tag} {name}=...>"
        if index:
            trial = copy.deepcopy(root)
            node = list(trial.iter())[index]
            node.getparent().remove(node)
            if valid(trial):
                return f"<{element.tag}>"
    return "(no single attribute or element)"


def _check_xml(kind: str, xml, failures: list) -> None:
    if not isinstance(xml, str) or not xml.strip():
        failures.append(("output", f"no {kind} XML"))
        return
    try:
        (xmlcheck.assert_valid_disk if kind == "disk" else xmlcheck.assert_valid_secret)(xml)
    except AssertionError as exc:
        try:
            where = _culprit(kind, xml)
        except Exception:  # noqa: BLE001 - best effort, for the report only
            where = _schema_detail(exc)
        failures.append((f"{kind}-schema", f"rejects {where}"))
    except Exception as exc:  # noqa: BLE001 - XML that does not even parse
        failures.append((f"{kind}-schema", f"does not parse: {type(exc).__name__}: {exc}"[:160]))


def _fidelity(doc, disk_xml: str, failures: list) -> None:
    from lxml import etree
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        return
    data = doc["data"]
    try:
        disk = etree.fromstring(disk_xml.encode("utf-8", "surrogatepass"))
    except Exception:  # noqa: BLE001 - the schema check reports it
        return
    serial = doc.get("serial") or data.get("volume_id")
    got = disk.findtext("serial")
    if isinstance(serial, str) and serial and got != serial:
        failures.append(("fidelity", f"<serial> {got!r:.40} for {serial!r:.40}"))
    source = disk.find("source")
    if source is None:
        return
    path = data.get("device_path")
    if disk.get("type") == "block" and isinstance(path, str) and path \
            and source.get("dev") != path:
        failures.append(("fidelity", (f"<source dev> {source.get('dev')!r:.40} for "
                                      f"device_path {path!r:.40}")))
    iqn = data.get("target_iqn")
    if disk.get("type") == "network" and isinstance(iqn, str) and not data.get(
            "selected_target") and not (source.get("name") or "").startswith(iqn + "/"):
        failures.append(("fidelity", (f"<source name> {source.get('name')!r:.40} for "
                                      f"target_iqn {iqn!r:.40}")))
    name = source.get("name") or ""
    if disk.get("type") == "network" and source.get("protocol") == "iscsi":
        lun = name.rpartition("/")[2]
        if not (lun.isascii() and lun.isdigit() and int(lun) < 2 ** 64):
            failures.append(("fidelity", (f"source name {name[-30:]!r} does not end in a "
                                          "LUN from 0 to 2**64-1")))
    user = data.get("auth_username")
    auth = source.find("auth")
    if disk.get("type") == "network" and auth is not None and isinstance(user, str) \
            and auth.get("username") != user:
        failures.append(("fidelity", (f"<auth username> {auth.get('username')!r:.40} for "
                                      f"{user!r:.40}")))


def _split_text_output(out: str) -> tuple[str, str | None]:
    body = out.removesuffix("\n")
    disk, sep, secret = body.partition("\n<secret")
    return disk, ("<secret" + secret) if sep else None


def check(case: Case, rc, out: str, err: str) -> list[tuple[str, str]]:
    failures: list[tuple[str, str]] = []
    json_mode = "--json" in case.argv
    if rc not in (0, 2):
        failures.append(("exit-code", f"exit {rc}"))
    for name, text in (("stdout", out), ("stderr", err)):
        if "Traceback" in text:
            failures.append(("unexpected", f"Traceback on {name}"))
        match = _UNEXPECTED.search(text)
        if match:
            failures.append(("unexpected", match.group(0).strip().rstrip(":")))
    bad = _bad_chars(err, "\n")
    lines = err.split("\n") if err else []
    if err and not err.endswith("\n"):
        failures.append(("stderr-lines", "stderr does not end with a newline"))
    lines = lines[:-1] if err.endswith("\n") else lines
    errors, odd = 0, []
    for line in lines:
        if line.startswith(_ERROR_LINE) or _ARGPARSE_ERROR.match(line):
            errors += 1
        elif not (_LOG_LINE.match(line) or line.startswith("usage: ")
                  or (line.startswith(" ") and any(x.startswith("usage: ") for x in lines))
                  or _LATE_SIGNAL.match(line)):
            odd.append(line)
    if errors > 1:
        failures.append(("stderr-lines", f"{errors} error lines"))
    if rc == 2 and errors == 0:
        failures.append(("stderr-lines", "exit 2 without an error line"))
    if odd:
        failures.append(("stderr-lines", f"line of no known shape: {odd[0][:60]!r}"))
    if bad:
        failures.append(("stderr-control", "raw " + " ".join(f"U+{ord(c):04X}" for c in bad)))
    bad_out = _bad_chars(out, "\n\t")
    if bad_out:
        failures.append(("stdout-control",
                         "raw " + " ".join(f"U+{ord(c):04X}" for c in bad_out)))
    leaked = [p for p in case.passwords if p and (p in out or p in err)]
    if leaked:
        failures.append(("password", "printed on " + "/".join(
            n for n, t in (("stdout", out), ("stderr", err)) if any(p in t for p in leaked))))
    disk_xml = secret_xml = None
    if json_mode and out.strip():
        try:
            payload = json.loads(out)
        except ValueError as exc:
            failures.append(("json", f"stdout is not JSON: {exc}"[:120]))
            payload = None
        if rc == 0 and payload is not None:
            if not isinstance(payload, dict) or set(payload) != {"driver", "disk_xml",
                                                                 "secret_xml"}:
                failures.append(("json", "not {driver, disk_xml, secret_xml}"))
            else:
                disk_xml, secret_xml = payload["disk_xml"], payload["secret_xml"]
        elif rc == 2 and payload is not None:
            error = payload.get("error") if isinstance(payload, dict) else None
            if not isinstance(error, dict) or error.get("exit_code") != 2:
                failures.append(("json", "exit 2 without {'error': {..., 'exit_code': 2}}"))
    elif json_mode and rc == 0:
        failures.append(("json", "exit 0 with nothing on stdout"))
    elif json_mode and rc == 2 and not any(_ARGPARSE_ERROR.match(x) and not x.startswith(
            _ERROR_LINE) for x in lines):
        failures.append(("json", "exit 2 without the JSON error on stdout"))
    if rc == 0:
        if not json_mode:
            disk_xml, secret_xml = _split_text_output(out)
        if disk_xml is not None or not json_mode:
            _check_xml("disk", disk_xml, failures)
            if isinstance(disk_xml, str) and case.doc is not None:
                _fidelity(case.doc, disk_xml, failures)
        if secret_xml is not None:
            _check_xml("secret", secret_xml, failures)
    elif rc == 2 and not json_mode and out:
        failures.append(("output", "exit 2 with output on stdout"))
    return failures


# -- running a case --------------------------------------------------------------------

@contextlib.contextmanager
def _patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class InProcess:
    """Runs cases through ``hvplug.cli.main.main(argv)``; one instance per directory.

    ``cache_parser``: build hvplug's argparse parser once rather than on every
    call (it is most of the per-call cost; see tools/bench and the report).
    """

    def __init__(self, directory: Path, cache_parser: bool = True):
        self.directory = Path(directory)
        self.configs = {}
        for name, text in CONFIGS.items():
            path = self.directory / f"fuzz-{name}.conf"
            path.write_text(text)
            self.configs[name] = str(path)
        self.file = self.directory / "connection_info.json"
        self.cache_parser = cache_parser
        self.timings: list[float] = []

    def argv(self, case: Case) -> list[str]:
        return ["--config-file", self.configs[case.config], "render", "--connection-info",
                "-" if case.stdin else str(self.file), *case.argv]

    @contextlib.contextmanager
    def session(self):
        """Patch what is patched once for many cases (the parser cache)."""
        from hvplug.cli import main as cli
        with contextlib.ExitStack() as stack:
            if self.cache_parser:
                stack.enter_context(_patched(cli, "build_parser",
                                             functools.cache(cli.build_parser)))
            yield self

    def run(self, case: Case) -> tuple[object, str, str]:
        from hvplug.cli import main as cli
        if not case.stdin:
            self.file.write_bytes(case.data)
        out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
        out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", newline="\n")
        err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="backslashreplace",
                               newline="\n")
        stdin = io.TextIOWrapper(io.BytesIO(case.data if case.stdin else b""),
                                 encoding="utf-8", errors="strict")
        # main()'s logging.basicConfig acts as in a fresh process: on a root
        # logger without handlers, writing to this case's stderr.
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        root.handlers[:] = []
        start = time.perf_counter()
        with _patched(sys, "stdin", stdin), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                rc = cli.main(self.argv(case))
            except SystemExit as exc:  # argparse
                rc = exc.code
            except BaseException as exc:  # noqa: BLE001 - escaped main(): a finding
                rc = f"raised {type(exc).__name__}"
                print(f"Traceback (escaped main): {type(exc).__name__}: {exc}"[:300],
                      file=sys.stderr)
            finally:
                root.handlers[:] = handlers
                root.setLevel(level)
                with contextlib.suppress(Exception):
                    out.flush()
                with contextlib.suppress(Exception):
                    err.flush()
        self.timings.append(time.perf_counter() - start)
        return (rc, out_bytes.getvalue().decode("utf-8", "surrogateescape"),
                err_bytes.getvalue().decode("utf-8", "surrogateescape"))

    def check(self, case: Case) -> list[tuple[str, str]]:
        return check(case, *self.run(case))


def run_subprocess(case: Case, directory: Path, timeout: float = 300) -> tuple[object, str, str]:
    """``python -m hvplug.cli.main render ...`` as a real process (the timeout is a
    hang guard, not a time limit the test asserts)."""
    directory = Path(directory)
    conf = directory / f"fuzz-{case.config}.conf"
    if not conf.exists():
        conf.write_text(CONFIGS[case.config])
    path = directory / f"case-{case.id}.json"
    if not case.stdin:
        path.write_bytes(case.data)
    argv = [sys.executable, "-m", "hvplug.cli.main", "--config-file", str(conf), "render",
            "--connection-info", "-" if case.stdin else str(path), *case.argv]
    env = dict(os.environ, LC_ALL="C.UTF-8", PYTHONPATH=str(REPO))
    env.pop("PYTHONIOENCODING", None)
    try:
        proc = subprocess.run([a.encode("utf-8", "surrogateescape") for a in argv],
                              input=case.data if case.stdin else b"", capture_output=True,
                              check=False, env=env, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hung", "", ""
    finally:
        path.unlink(missing_ok=True)
    return (proc.returncode, proc.stdout.decode("utf-8", "surrogateescape"),
            proc.stderr.decode("utf-8", "surrogateescape"))


def category(failure: tuple[str, str]) -> str:
    """A failure's category: the property and the detail with values cut out."""
    prop, detail = failure
    detail = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", detail)
    detail = re.sub(r"\d+", "N", detail)
    return f"{prop}: {detail[:90]}"
