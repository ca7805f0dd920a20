"""Encrypted volumes: QEMU's native LUKS, with a passphrase secret hvplug owns.

A volume whose ``connection_info`` says ``"encrypted": true`` (in ``data``,
where Cinder puts it) is a LUKS container.  As Nova's native LUKS does,
QEMU opens it with the passphrase and the guest sees the plaintext; the disk
references the passphrase's libvirt secret::

    <source protocol='iscsi' name='iqn.x/1'>
      <host name='192.0.2.10' port='3260'/>
      <encryption format='luks'>
        <secret type='passphrase' uuid='...'/>
      </encryption>
    </source>

``<encryption>`` goes inside ``<source>``, where libvirt documents it (it
belongs to that source; libvirt 9.0's schema still accepts Nova's place, a
child of ``<disk>``, which is read too).

The passphrase comes from the caller (``hvplug attach --passphrase-file``,
the ``passphrase`` of :func:`hvplug.virt.attach.attach_volume`) or from
``[libvirt] volume_key_dir``, one file per volume id.  It is checked for
before anything is touched (:func:`passphrase_for`) and goes into a libvirt
secret of usage ``volume`` keyed by the volume id (Nova's usage), private,
persistent and marked as hvplug's exactly as the CHAP secrets are: defined
or adopted through :func:`hvplug.virt.secrets.ensure_secret` after the
driver's connect, and released through
:func:`hvplug.virt.secrets.release_secret` on rollback and detach, only when
no document libvirt may start a domain from references it.

hvplug never logs, prints or writes the passphrase, nor puts it in an argv:
it goes from the file to ``virSecretSetValue``, and libvirt hands it to QEMU
encrypted with the domain's master key.

>>> passphrase = passphrase_for(connection_info, read_passphrase_file("/root/vol42.key"))
>>> uuid = ensure_passphrase_secret(host, connection_info, passphrase)
>>> configure_disk(disk, uuid)
"""

import logging
import os
import stat
from typing import NamedTuple

from hvplug import connection_schema, exception
from hvplug.conf import CONF
from hvplug.utils import locks
from hvplug.virt import config, secrets

LOG = logging.getLogger(__name__)

FORMAT = "luks"
USAGE_TYPE = "volume"  # the secret's usage; a disk references it as type 'passphrase'
SECRET_TYPE = "passphrase"  # noqa: S105 - a secret type, not a secret
MAX_PASSPHRASE = 64 * 1024  # bytes; Nova's passphrases are 64 hex digits
KEY_DIR_OPTION = "[libvirt] volume_key_dir"

# QEMU's words (through libvirt's VIR_ERR_INTERNAL_ERROR) when it cannot
# open a LUKS volume: the only place the reason appears.
_QEMU_BAD_PASSPHRASE = "Invalid password, cannot unlock any keyslot"  # noqa: S105 - its message
_QEMU_NOT_LUKS = "Volume is not in LUKS format"


class Passphrase(NamedTuple):
    """A volume's LUKS passphrase, and where it came from (for the log)."""

    value: bytes
    source: str

    def __repr__(self) -> str:  # never the value
        return f"Passphrase(source={self.source!r})"


def is_encrypted(connection_info: dict) -> bool:
    """Whether the volume is a LUKS container (``data.encrypted`` true)."""
    return connection_info["data"].get("encrypted") is True


def _given_volume_id(connection_info: dict) -> str | None:
    found = connection_info.get("serial") or connection_info["data"].get("volume_id")
    return None if connection_schema.absent(found) else str(found)


def volume_id(connection_info: dict) -> str:
    """The id the passphrase secret and the key file are named by: ``serial``,
    else ``data.volume_id`` (Nova's ``get_volume_id``)."""
    found = _given_volume_id(connection_info)
    if found is None:
        raise exception.InvalidConnectionInfo(
            reason="an encrypted volume needs serial or data.volume_id: its passphrase "
            f"secret, and its file in {KEY_DIR_OPTION}, are named by it")
    return found


def check_device(connection_info: dict, device: str) -> None:
    """A LUKS volume is a disk QEMU decrypts, never a LUN passed through."""
    if device == "lun" and is_encrypted(connection_info):
        raise exception.InvalidInput(
            reason="an encrypted volume cannot be passed through as device 'lun' (the "
            "guest's SCSI commands would reach the ciphertext, not what QEMU decrypts); "
            "attach it as a disk (--device disk)")


def _who_may(mode: int) -> str:
    """Who besides the owner may use a file of ``mode``, in words."""
    others = [who for who, bits in (("its group", 0o070), ("others", 0o007))
              if mode & bits]
    return "open to " + " and ".join(others)


def read_passphrase_file(path: str, what: str = "--passphrase-file") -> bytes:
    """The passphrase in ``path``: its bytes exactly, as qemu-img's
    ``--object secret,file=`` and ``cryptsetup --key-file`` read them.

    A regular file that its group or others may read or write is refused;
    so is an empty file or one longer than :data:`MAX_PASSPHRASE`.
    ``what`` names where the path came from, for the messages.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise exception.PassphraseFileUnreadable(
            path=path, what=what, reason=exc.strerror or str(exc)) from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise exception.PassphraseFileUnreadable(path=path, what=what,
                                                 reason="it is a directory")
    with os.fdopen(fd, "rb") as stream:
        if stat.S_ISREG(mode) and mode & 0o077:
            raise exception.PassphraseFileUnsafe(path=path, what=what, reason=_who_may(mode),
                                                 mode=f"{stat.S_IMODE(mode):04o}")
        try:
            value = stream.read(MAX_PASSPHRASE + 1)
        except OSError as exc:
            raise exception.PassphraseFileUnreadable(
                path=path, what=what, reason=exc.strerror or str(exc)) from None
    if not value:
        raise exception.PassphraseFileUnreadable(path=path, what=what, reason="it is empty")
    if len(value) > MAX_PASSPHRASE:
        raise exception.PassphraseFileUnreadable(
            path=path, what=what, reason=f"it holds more than {MAX_PASSPHRASE} bytes")
    if value.endswith(b"\n"):
        LOG.warning("passphrase file %s ends with a newline, which is part of the "
                    "passphrase (as qemu-img and cryptsetup --key-file read it); write "
                    "the file with printf '%%s' if the volume's passphrase has none", path)
    return value


def _key_file(vid: str) -> str:
    """The key file of volume ``vid`` in ``[libvirt] volume_key_dir``."""
    key_dir = CONF.libvirt.volume_key_dir
    if not os.path.isabs(key_dir):
        raise exception.ConfigFileError(
            reason=f"{KEY_DIR_OPTION} {key_dir!r} is not an absolute path")
    if "/" in vid or vid in (".", ".."):
        raise exception.InvalidConnectionInfo(
            reason=f"volume id {vid!r} cannot name a file in {KEY_DIR_OPTION}; pass "
            "--passphrase-file instead")
    return os.path.join(key_dir, vid)


def passphrase_for(connection_info: dict, passphrase: bytes | None,
                   device: str = "disk") -> Passphrase | None:
    """The passphrase an attach of this volume uses; None for a plain volume.

    Called before anything is touched: ``encrypted: true`` without a
    passphrase given or a key file in ``[libvirt] volume_key_dir`` is
    refused (exit 2), and so is a passphrase for a volume that is not
    encrypted.  A given ``passphrase`` wins over the key directory.
    """
    if not is_encrypted(connection_info):
        if passphrase is not None:
            raise exception.PassphraseNotNeeded(
                volume=_given_volume_id(connection_info) or "(without a volume id)")
        return None
    check_device(connection_info, device)
    vid = volume_id(connection_info)
    if passphrase is not None:
        if not passphrase:
            raise exception.InvalidInput(reason=f"the passphrase of volume {vid} is empty")
        return Passphrase(passphrase, "the passphrase given")
    if not CONF.libvirt.volume_key_dir:
        raise exception.PassphraseMissing(volume=vid)
    path = _key_file(vid)
    if not os.path.lexists(path):
        raise exception.PassphraseKeyFileMissing(volume=vid, path=path)
    return Passphrase(read_passphrase_file(path, KEY_DIR_OPTION), path)


def lock_names(connection_info: dict) -> list[str]:
    """The lock of the passphrase secret's usage, which an attach holds from
    :func:`ensure_passphrase_secret` until the disk is in the domain."""
    if not is_encrypted(connection_info):
        return []
    return [locks.secret_lock_name(USAGE_TYPE, volume_id(connection_info))]


def secret_config(connection_info: dict) -> config.LibvirtConfigSecret | None:
    """The passphrase secret an encrypted volume needs, without its value
    (render); None for a plain volume."""
    if not is_encrypted(connection_info):
        return None
    vid = volume_id(connection_info)
    return config.LibvirtConfigSecret(
        ephemeral=False, private=True,
        description=f"{secrets.OWNER_MARKER} LUKS passphrase of volume {vid}",
        usage_type=USAGE_TYPE, usage_id=vid)


def _proven_by_the_attach() -> None:
    """No separate proof: QEMU opening the LUKS header during the attach is
    the proof, and a wrong passphrase fails the attach, whose rollback
    removes the secret it defined."""
    return None


def ensure_passphrase_secret(host, connection_info: dict,
                             passphrase: Passphrase | None) -> str | None:
    """The uuid of the volume's passphrase secret, holding ``passphrase``;
    None for a plain volume.  The caller holds :func:`lock_names`.

    Without a secret of the volume's usage, hvplug defines its own; its own
    unused one gets the value; its own one that a domain uses keeps its
    value (the volume is open with it there); someone else's persistent one
    is used as it is (see :mod:`hvplug.virt.secrets`).
    """
    conf = secret_config(connection_info)
    if passphrase is None or conf is None:
        return None
    uuid = secrets.ensure_secret(host, conf, passphrase.value, prove=_proven_by_the_attach,
                                 keep_in_use=True)
    LOG.debug("passphrase secret %s of volume %s, from %s", uuid, conf.usage_id,
              passphrase.source)
    return uuid


def configure_disk(disk: config.LibvirtConfigGuestDisk, secret_uuid: str | None) -> None:
    """``<encryption format='luks'>`` with secret ``secret_uuid`` on ``disk``;
    nothing for None (a plain volume)."""
    if secret_uuid is None:
        return
    disk.encryption_format = FORMAT
    disk.encryption_secret_type = SECRET_TYPE
    disk.encryption_secret_uuid = secret_uuid


def release_passphrase_secret(host, secret_uuid: str | None) -> str | None:
    """Undefine secret ``secret_uuid`` if it is hvplug's and nothing needs it
    (a rollback; the caller holds :func:`lock_names`); what happened."""
    if secret_uuid is None:
        return None
    secret = host.secret_by_uuid(secret_uuid)
    return "absent" if secret is None else secrets.release_secret(host, secret)


def release_disk_secret(host, disk: config.LibvirtConfigGuestDisk,
                        operation: str) -> str | None:
    """After a detach: the passphrase secret disk layer ``disk`` referenced
    (by uuid, else by usage) is released under its usage's lock; what
    happened, None when the disk had no ``<encryption>`` secret."""
    if disk.encryption_secret_uuid:
        secret = host.secret_by_uuid(disk.encryption_secret_uuid)
    elif disk.encryption_secret_usage:
        secret = host.find_secret(USAGE_TYPE, disk.encryption_secret_usage)
    else:
        return None
    if secret is None:
        return "absent"
    with locks.named(locks.secret_lock_name(USAGE_TYPE, secret.usageID()), operation):
        return secrets.release_secret(host, secret)


def attach_error(message: str, connection_info: dict, domain: str,
                 undone: bool = True) -> exception.HvplugError | None:
    """The precise error for libvirt's attach failure ``message`` when QEMU
    could not open the LUKS volume, else None."""
    if not is_encrypted(connection_info):
        return None
    where = {"volume": volume_id(connection_info), "reason": message.rstrip("."),
             "undone": " Nothing was left behind." if undone else ""}
    if _QEMU_BAD_PASSPHRASE in message:
        return exception.PassphraseRejected(domain=domain, **where)
    if _QEMU_NOT_LUKS in message:
        return exception.NotALuksVolume(**where)
    return None
