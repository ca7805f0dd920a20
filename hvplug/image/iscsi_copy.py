"""Copy images to and from iSCSI volumes with qemu-img, no host attach.

QEMU's own initiator (libiscsi) reads or writes the LUN directly, so the
host never logs in. The CHAP password reaches qemu-img in a 0600 file
named by ``--object secret,file=``, never in its arguments.  ``-W -m 8``
lets eight coroutines write out of order, several times faster than the
default on a loopback target (doc/performance.md).

``data`` is the ``data`` part of an iSCSI ``connection_info``::

    {"target_portal": "127.0.0.1:3260", "target_iqn": "iqn...", "target_lun": 1,
     "auth_method": "CHAP", "auth_username": "u", "auth_password": "p"}
"""

import contextlib
import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from hvplug import exception
from hvplug.connection_schema import chap_credentials, initiator_name, iscsi_targets
from hvplug.utils import executor

LOG = logging.getLogger(__name__)

Progress = Callable[[float], None]
_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
COROUTINES = 8


@contextlib.contextmanager
def _password_file(password: str | None) -> Iterator[Path | None]:
    if password is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="hvplug-copy-") as tmp:  # 0700
        path = Path(tmp) / "chap"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        yield path


def image_opts(data: dict, secret_id: str | None, initiator: str | None = None) -> str:
    """qemu's ``driver=iscsi,...`` option string for the volume in ``data``.

    ``initiator`` defaults to this host's IQN (``[libvirt]`` / open-iscsi).
    """
    target = iscsi_targets(data)[0]
    opts = [f"driver=iscsi,transport=tcp,portal={target.portal}",
            f"target={_escape(target.iqn)}", f"lun={target.lun}",
            f"initiator-name={_escape(initiator or initiator_name())}"]
    credentials = chap_credentials(data)
    if credentials:
        opts += [f"user={_escape(credentials[0])}", f"password-secret={secret_id}"]
    return ",".join(opts)


def _secret_args(path: Path | None) -> list[str]:
    return ["--object", f"secret,id=chap,file={path}"] if path else []


def copy_to_volume(image: str, data: dict, source_format: str | None = None,
                   progress: Progress | None = None, initiator: str | None = None,
                   execute=None) -> None:
    """Write ``image`` (raw, qcow2, ... ) onto the volume, raw, from offset 0."""
    source_format = source_format or detect_format(image)
    # qemu-img takes --target-image-opts only with --image-opts for the
    # source too (and then no -f): the source is named by options as well.
    source = f"driver={source_format},file.driver=file,file.filename={_escape(image)}"
    credentials = chap_credentials(data)
    with _password_file(credentials[1] if credentials else None) as secret:
        # The target's format is its driver (iscsi: raw); -O would conflict.
        cmd = ["qemu-img", "convert", "-p", "-n", "-W", "-m", str(COROUTINES),
               *_secret_args(secret), "--image-opts", "--target-image-opts",
               source, image_opts(data, "chap" if secret else None, initiator)]
        _run(cmd, progress, credentials, execute or executor.execute)


def copy_to_device(image: str, device: str, progress: Progress | None = None,
                   execute=None) -> None:
    """Write ``image`` onto a host-attached block ``device`` (FC), raw."""
    cmd = ["qemu-img", "convert", "-p", "-n", "-W", "-m", str(COROUTINES),
           "-f", detect_format(image), "-O", "raw", image, device]
    _run(cmd, progress, None, execute or executor.execute)


def copy_from_device(device: str, image: str, out_format: str = "raw",
                     progress: Progress | None = None, execute=None) -> None:
    """Read a host-attached block ``device`` into a new ``image``."""
    if out_format not in ("raw", "qcow2"):
        raise exception.InvalidInput(reason=f"image format {out_format!r} is not raw or qcow2")
    cmd = ["qemu-img", "convert", "-p", "-W", "-m", str(COROUTINES),
           "-f", "raw", "-O", out_format, device, image]
    _run(cmd, progress, None, execute or executor.execute)


def image_info(image: str) -> dict:
    """``qemu-img info`` of a local image: ``format``, ``virtual-size``, ..."""
    result = subprocess.run(["qemu-img", "info", "--output=json", image],
                            capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise exception.InvalidInput(
            reason=f"cannot read image {image}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def detect_format(image: str) -> str:
    """What qemu-img says ``image`` is (raw, qcow2, vmdk, ...)."""
    return image_info(image)["format"]


def _escape(value: str) -> str:
    """qemu option values double their commas."""
    return value.replace(",", ",,")


def copy_from_volume(data: dict, image: str, out_format: str = "raw",
                     progress: Progress | None = None, initiator: str | None = None,
                     execute=None) -> None:
    """Read the whole volume into a new ``image`` file of ``out_format``."""
    if out_format not in ("raw", "qcow2"):
        raise exception.InvalidInput(reason=f"image format {out_format!r} is not raw or qcow2")
    credentials = chap_credentials(data)
    with _password_file(credentials[1] if credentials else None) as secret:
        cmd = ["qemu-img", "convert", "-p", "-W", "-m", str(COROUTINES), "-O", out_format,
               *_secret_args(secret), "--image-opts",
               image_opts(data, "chap" if secret else None, initiator), image]
        _run(cmd, progress, credentials, execute or executor.execute)


def _run(cmd: list[str], progress: Progress | None, credentials, execute) -> None:
    """Run qemu-img through the executor, reporting its ``(NN.NN/100%)`` progress."""
    last = [-10.0]

    def on_output(chunk: bytes) -> None:
        for match in _PERCENT.finditer(chunk):
            done = float(match[1])
            if progress:
                progress(done)
            if done - last[0] >= 10 or done == 100:
                LOG.info("copy %.0f%% done", done)
                last[0] = done
    # No overall timeout: a long copy is alive as long as it reports progress.
    execute(*cmd, timeout=None, on_output=on_output,
            secrets=(credentials[1],) if credentials else ())
