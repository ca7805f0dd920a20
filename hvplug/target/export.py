"""What hvplug remembers about each export, kept root-only on disk.

An export record plays the part of Cinder's ``provider_location`` and
``provider_auth`` columns: it is how ``ensure_export`` rebuilds a target
after the target daemon restarted, and where the CHAP password lives.
Records are JSON files, one per volume, mode 0600 in a 0700 directory,
written atomically (temporary file, fsync, rename), so a crash never leaves
a half-written record behind.
"""

import dataclasses
import json
import os
import re
from pathlib import Path

from hvplug import exception
from hvplug.utils import fileutils

# What an IQN may carry (RFC 3720/3722: letters, digits, '-', '.', ':';
# compared case-insensitively), minus ':' so the id stays a file name.
_VOLUME_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,127}$")


def check_volume_id(volume_id: str) -> str:
    """A volume id is a file-name-safe token (a UUID in Cinder)."""
    if not isinstance(volume_id, str) or not _VOLUME_ID.match(volume_id):
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
        return self.auth_method == "CHAP" and bool(self.auth_username and self.auth_password)

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
            record["auth_password"] = "***"
        record["provider_location"] = self.provider_location()
        return record


class ExportStore:
    """Export records under one directory, one ``<volume_id>.json`` each."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def _path(self, volume_id: str) -> Path:
        return self.directory / f"{check_volume_id(volume_id)}.json"

    def save(self, export: Export) -> None:
        fileutils.private_dir(self.directory)
        text = json.dumps(dataclasses.asdict(export), indent=1, sort_keys=True)
        fileutils.write_private_file(self._path(export.volume_id), text)

    def load(self, volume_id: str) -> Export | None:
        try:
            text = self._path(volume_id).read_text()
        except FileNotFoundError:
            return None
        return Export(**json.loads(text))

    def remove(self, volume_id: str) -> None:
        self._path(volume_id).unlink(missing_ok=True)

    def all(self) -> list[Export]:
        if not self.directory.is_dir():
            return []
        return [Export(**json.loads(p.read_text()))
                for p in sorted(self.directory.glob("*.json"))]
