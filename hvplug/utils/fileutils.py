"""Files that hold secrets, written so that a crash or a reader never sees half.

Target configuration (tgt stanzas, ietd.conf, chiscsi target files, export
records) carries CHAP passwords: each is written to a 0600 temporary file
in a 0700 directory, fsynced, renamed over the old one, and the directory
fsynced so the rename itself survives a crash.
"""

import os
import tempfile
from pathlib import Path

from hvplug.utils import locks


def private_dir(directory: str | os.PathLike) -> Path:
    """``directory``, created if needed, mode 0700."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
    return path


def write_private_file(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; the file is mode 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp made it 0600
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def locked(lock_file: str | os.PathLike):
    """Hold ``lock_file`` against other threads and processes (no time limit).

    See :func:`hvplug.utils.locks.hold`; an existing directory is locked
    itself, so no lock file is left in it.
    """
    return locks.hold(lock_file)
