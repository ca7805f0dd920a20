"""What hvplug remembers about each export, kept root-only on disk.

An export record plays the part of Cinder's ``provider_location`` and
``provider_auth`` columns: it is how ``ensure_export`` rebuilds a target
after the target daemon restarted, and where the CHAP password lives.
Records are JSON files, one per volume, mode 0600 in a 0700 directory,
written atomically (temporary file, fsync, rename), so a crash never leaves
a half-written record behind.

A record that cannot be read anyway (truncated by hand, edited into
invalid JSON or the wrong shape) is ``ExportRecordCorrupt`` naming its
file; ``ExportStore.scan`` hands back every good record and the bad ones
apart, so one bad file never hides the others.
"""

import dataclasses
import json
import logging
import os
import re
from pathlib import Path

from hvplug import exception
from hvplug.conf.target import HELPERS
from hvplug.utils import fileutils

LOG = logging.getLogger(__name__)

# What an IQN may carry (RFC 3720/3722: letters, digits, '-', '.', ':';
# compared case-insensitively), minus ':' so the id stays a file name.
# Used with fullmatch: '$' would also match before a trailing newline.
_VOLUME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,127}")
RECORD_SUFFIX = ".json"


def check_volume_id(volume_id: str) -> str:
    """A volume id is a file-name-safe token (a UUID in Cinder)."""
    if not isinstance(volume_id, str) or not _VOLUME_ID.fullmatch(volume_id):
        raise exception.InvalidInput(
            reason=f"volume id {volume_id!r} must be 1-128 letters, digits, '.' "
            "or '-', starting with a letter or digit (a UUID works)")
    return volume_id


@dataclasses.dataclass
class Export:
    """One exported volume.

    ``auth_password`` is a secret: ``public()`` is what may be shown.
    """

    volume_id: str
    path: str
    iqn: str
    helper: str
    portals: list[str]
    lun: int = 1
    tid: int | None = None
    auth_method: str | None = "CHAP"
    auth_username: str | None = None
    auth_password: str | None = None
    iser: bool = False
    initiators: list[str] = dataclasses.field(default_factory=list)

    @property
    def has_chap(self) -> bool:
        return self.chap is not None

    @property
    def chap(self) -> tuple[str, str] | None:
        """``(user, password)`` when the export uses CHAP and has both; else None."""
        if self.auth_method == "CHAP" and self.auth_username and self.auth_password:
            return self.auth_username, self.auth_password
        return None

    @property
    def name(self) -> str:
        return f"volume-{self.volume_id}"

    def provider_location(self) -> str:
        """Cinder's form: ``ip:port[;ip2:port],tid iqn lun``."""
        return f"{';'.join(self.portals)},{self.tid} {self.iqn} {self.lun}"

    def public(self, show_secrets: bool = False) -> dict:
        """The record as a dict; the password masked unless asked for."""
        record = dataclasses.asdict(self)
        if not show_secrets and record["auth_password"]:
            record["auth_password"] = "***"  # noqa: S105 - the redaction mark
        record["provider_location"] = self.provider_location()
        return record


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


# key -> (check, what it must be); the record's shape, key by key
_FIELDS = {
    "volume_id": (lambda v: isinstance(v, str), "a string"),
    "path": (lambda v: isinstance(v, str) and os.path.isabs(v), "an absolute path"),
    "iqn": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "helper": (lambda v: v in HELPERS, f"one of {', '.join(HELPERS)}"),
    "portals": (lambda v: _is_str_list(v) and bool(v), "a non-empty list of 'ip:port'"),
    "lun": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "tid": (lambda v: v is None or _is_int(v), "an integer or null"),
    "auth_method": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "auth_username": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "auth_password": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "iser": (lambda v: isinstance(v, bool), "true or false"),
    "initiators": (_is_str_list, "a list of initiator names"),
}
_REQUIRED = ("volume_id", "path", "iqn", "helper", "portals")


def export_from_record(data, path: Path) -> Export:
    """``data`` (a parsed record file at ``path``) as an Export, or
    ``ExportRecordCorrupt`` saying what is wrong with it."""
    def corrupt(reason: str) -> exception.ExportRecordCorrupt:
        return exception.ExportRecordCorrupt(path=repr(str(path)), reason=reason)

    if not isinstance(data, dict):
        raise corrupt(f"it holds a JSON {type(data).__name__}, not an object")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise corrupt(f"keys {', '.join(missing)} are missing")
    unknown = sorted(repr(key) for key in data if key not in _FIELDS)
    if unknown:
        raise corrupt(f"it has unknown keys {', '.join(unknown)}")
    for key, value in data.items():
        check, what = _FIELDS[key]
        if not check(value):
            raise corrupt(f"{key} must be {what}, not {_short(value)}"
                          if key != "auth_password" else f"{key} must be {what}")
    expected = path.name[:-len(RECORD_SUFFIX)]
    if data["volume_id"] != expected:
        raise corrupt(f"its volume_id {_short(data['volume_id'])} is not its file "
                      f"name's {expected!r}")
    return Export(**data)


class ExportStore:
    """Export records under one directory, one ``<volume_id>.json`` each."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def _path(self, volume_id: str) -> Path:
        return self.directory / f"{check_volume_id(volume_id)}{RECORD_SUFFIX}"

    def record_path(self, volume_id: str) -> Path:
        """Where the record of ``volume_id`` is (or would be)."""
        return self._path(volume_id)

    def save(self, export: Export) -> None:
        fileutils.private_dir(self.directory)
        text = json.dumps(dataclasses.asdict(export), indent=1, sort_keys=True)
        fileutils.write_private_file(self._path(export.volume_id), text)

    def load(self, volume_id: str) -> Export | None:
        """The record of ``volume_id``; None if there is none.

        Raises ``ExportRecordCorrupt`` (naming the file) if it cannot be read.
        """
        return self._read(self._path(volume_id), missing_ok=True)

    @staticmethod
    def _read(path: Path, missing_ok: bool = False) -> Export | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            if missing_ok:
                return None
            raise exception.ExportRecordCorrupt(path=repr(str(path)),
                                                reason="it vanished while being read") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise exception.ExportRecordCorrupt(path=repr(str(path)),
                                                reason=f"cannot read it ({reason})") from None
        if not text.strip():
            raise exception.ExportRecordCorrupt(path=repr(str(path)), reason="it is empty")
        try:
            data = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or a number too long for int()
            where = (f" at line {exc.lineno} column {exc.colno}"
                     if isinstance(exc, json.JSONDecodeError) else "")
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise exception.ExportRecordCorrupt(
                path=repr(str(path)),
                reason=f"it is not valid JSON ({detail}{where}; truncated?)") from None
        return export_from_record(data, path)

    def remove(self, volume_id: str) -> None:
        self._path(volume_id).unlink(missing_ok=True)

    def volume_ids(self) -> list[str]:
        """The ids of every record file, readable or not (no file is read)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name[:-len(RECORD_SUFFIX)] for p in self.directory.iterdir()
                      if p.name.endswith(RECORD_SUFFIX) and not p.name.startswith("."))

    def case_twin(self, volume_id: str) -> str | None:
        """Another record's id that equals ``volume_id`` ignoring case, if any."""
        folded = volume_id.casefold()
        return next((other for other in self.volume_ids()
                     if other != volume_id and other.casefold() == folded), None)

    def scan(self) -> tuple[list[Export], list[exception.ExportRecordCorrupt]]:
        """Every good record, and every bad one as ``ExportRecordCorrupt``."""
        good, bad = [], []
        for name in self.volume_ids():
            path = self.directory / f"{name}{RECORD_SUFFIX}"
            try:
                if not _VOLUME_ID.fullmatch(name):
                    raise exception.ExportRecordCorrupt(
                        path=repr(str(path)),
                        reason="its file name is not '<volume id>.json' (1-128 letters, "
                        "digits, '.' or '-')")
                export = self._read(path, missing_ok=True)
            except exception.ExportRecordCorrupt as exc:
                bad.append(exc)
                continue
            if export is not None:  # removed meanwhile: not an error
                good.append(export)
        return good, bad

    def all(self) -> list[Export]:
        """Every good record; a bad one is logged and skipped (see ``scan``)."""
        good, bad = self.scan()
        for problem in bad:
            LOG.error("%s", problem.message)
        return good
