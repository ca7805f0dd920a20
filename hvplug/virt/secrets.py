"""Which libvirt secrets are hvplug's, who still needs one, and when it may go.

**Ownership.**  A secret hvplug defines is private, persistent and carries
:data:`OWNER_MARKER` at the start of its description, which libvirt keeps
in ``/etc/libvirt/secrets/<uuid>.xml`` across restarts.  Only such a secret
is ever given a new value or undefined by hvplug.  A secret someone else
defined for the same usage is used as it is, only when it is persistent,
and only after the volume's credentials were proven by a login; it is never
changed and never deleted.

**Users.**  A secret is needed by every XML document libvirt may start a
domain from (live, persistent, managed save image, snapshot metadata) that
references it anywhere, by uuid or by usage, disk sources and their
``<backingStore>`` chains and ``<mirror>`` alike.  Save files written with
``virsh save`` are outside libvirt's view: they are the operator's.

Callers hold the usage's lock (:func:`hvplug.utils.locks.secret_lock_name`)
around :func:`ensure_secret` + the attach, and around :func:`release_secret`.
"""

import logging
from collections.abc import Callable
from typing import NamedTuple

from lxml import etree

from hvplug import exception
from hvplug.virt import config

LOG = logging.getLogger(__name__)

OWNER_MARKER = "hvplug-owned:"


def owned_description(usage_id: str) -> str:
    return f"{OWNER_MARKER} CHAP secret for iSCSI volume {usage_id}"


def read_config(secret) -> config.LibvirtConfigSecret:
    """The parsed XML of virSecret ``secret``."""
    return config.LibvirtConfigSecret.from_xml(secret.XMLDesc(0))


def is_owned(conf: config.LibvirtConfigSecret) -> bool:
    """Whether hvplug created this secret (and so may change or delete it)."""
    return (bool(conf.description) and conf.description.startswith(OWNER_MARKER)
            and conf.private and not conf.ephemeral)


class SecretUser(NamedTuple):
    """A place that references a secret: ``domain``, ``where`` it is, the disk."""

    domain: str
    where: str  # live, config, managed-save, snapshot NAME
    dev: str | None

    def __str__(self) -> str:
        return f"'{self.domain}' ({self.where}{', ' + self.dev if self.dev else ''})"


class SecretRef(NamedTuple):
    """How XML can name one secret: its uuid and its usage."""

    uuid: str | None
    usage_type: str | None
    usage_id: str | None

    @classmethod
    def of(cls, conf: config.LibvirtConfigSecret) -> "SecretRef":
        return cls(conf.uuid, conf.usage_type, conf.usage_id)

    def needles(self) -> list[str]:
        """Strings one of which a referencing document must contain."""
        found = [self.uuid] if self.uuid else []
        if self.usage_id:
            found.append(attribute_text(self.usage_id))
        return found


def attribute_text(text: str) -> str:
    """``text`` as libvirt writes it in an XML attribute value (to search raw XML)."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


_REFERENCE = ".//secret[@uuid=$uuid or (@type=$type and @usage=$usage)]"
# A disk names a secret's usage type in its <secret type=...>, except for a
# volume secret, which <encryption> references as type 'passphrase'.
_REFERENCE_TYPES = {"volume": "passphrase"}


def _owner_dev(element: etree._Element) -> str | None:
    for ancestor in element.iterancestors("disk", "hostdev"):
        devs = ancestor.xpath("./target/@dev")
        return devs[0] if devs else ancestor.get("type")
    return None


def references(xml: str, ref: SecretRef) -> list[str | None]:
    """Target devs (None where there is none) of the disks in ``xml`` that use ``ref``."""
    if not any(needle in xml for needle in ref.needles()):
        return []  # the cheap test first: most documents name neither
    root = etree.fromstring(xml.encode())
    kind = _REFERENCE_TYPES.get(ref.usage_type or "", ref.usage_type or "")
    found = root.xpath(_REFERENCE, uuid=ref.uuid or "", type=kind,
                       usage=ref.usage_id or "\0")
    return [_owner_dev(element) for element in found]


def users(host, ref: SecretRef) -> list[SecretUser]:
    """Every place libvirt may start a domain from that references ``ref``."""
    return [SecretUser(doc.domain, doc.where, dev)
            for doc in host.domain_documents()
            for dev in references(doc.xml, ref)]


def ensure_secret(host, conf: config.LibvirtConfigSecret, value: bytes,
                  prove: Callable[[], exception.HvplugError | None],
                  uuid: str | None = None, prove_new: bool = False,
                  keep_in_use: bool = False) -> str:
    """The uuid of a secret with ``conf``'s usage that holds ``value``.

    ``prove()`` logs in with the volume's credentials and returns the error
    if that fails.  Without a secret of that usage, hvplug defines its own.
    Its own existing secret gets the new value, after a login proved it when
    any domain still uses the old one (the value is private: a wrong one
    could not be put back).  Someone else's is used as it is, see the
    module docstring.

    ``uuid`` asks for that uuid (a disk that references a lost secret by
    uuid); ``prove_new`` proves the credentials before a new secret, or a
    new value of hvplug's unused one, too;
    ``keep_in_use``: hvplug's own secret keeps its value while any domain
    uses it, nothing proven or set (a LUKS passphrase: those domains opened
    the volume with it, and only QEMU could prove another).  A new secret
    takes ``conf.description`` when it carries :data:`OWNER_MARKER`.
    """
    existing = host.find_secret(conf.usage_type, conf.usage_id)
    if existing is not None and uuid and existing.UUIDString() != uuid:
        raise exception.SecretUsageTaken(uuid=uuid, usage=conf.usage_id,
                                         holder=existing.UUIDString())
    if existing is None:
        if prove_new:
            _prove(prove)
        mine = config.LibvirtConfigSecret(
            ephemeral=False, private=True, uuid=uuid,
            description=(conf.description
                         if (conf.description or "").startswith(OWNER_MARKER)
                         else owned_description(conf.usage_id)),
            usage_type=conf.usage_type, usage_id=conf.usage_id)
        secret = host.define_secret_xml(mine.to_xml())
        try:
            secret.setValue(value)
        except Exception:
            secret.undefine()  # a secret without its value must not outlive us
            raise
        LOG.debug("defined secret %s for %s", secret.UUIDString(), conf.usage_id)
        return secret.UUIDString()
    found = read_config(existing)
    found.uuid = found.uuid or existing.UUIDString()
    if is_owned(found):
        if users(host, SecretRef.of(found)):
            if keep_in_use:
                LOG.info("secret %s of %s is in use: it keeps its value", found.uuid,
                         conf.usage_id)
                return found.uuid
            _prove(prove)
        elif prove_new:  # no user to protect, but the caller wants the value proven
            _prove(prove)
        existing.setValue(value)
        LOG.debug("set the value of secret %s for %s", found.uuid, conf.usage_id)
        return found.uuid
    return _adopt(found, prove)


def _prove(prove) -> None:
    error = prove()
    if error is not None:
        raise error


def _adopt(found: config.LibvirtConfigSecret, prove) -> str:
    if found.ephemeral:
        raise exception.ForeignSecretUnusable(
            uuid=found.uuid, usage_type=found.usage_type, usage=found.usage_id,
            reason="it is ephemeral, so libvirt forgets it when libvirtd restarts "
            "and the disk could then neither start nor migrate",
            fix=f"undefine it (virsh secret-undefine {found.uuid}) to let hvplug "
            "create its own private one, or redefine it with ephemeral='no'")
    _prove(prove)
    if not found.private:
        LOG.warning("secret %s of %s is not private: its value is readable with "
                    "virsh secret-get-value", found.uuid, found.usage_id)
    LOG.info("using secret %s of %s, which hvplug did not create; it stays as it is",
             found.uuid, found.usage_id)
    return found.uuid


def release_secret(host, secret) -> str:
    """Undefine virSecret ``secret`` if it is hvplug's and nothing needs it.

    Returns what happened, for the log and the caller's report: ``removed``,
    ``absent``, ``kept: not hvplug's`` or ``kept: used by ...``.
    """
    try:
        found = read_config(secret)
    except host.libvirt.libvirtError as exc:
        if host.is_code(exc, "VIR_ERR_NO_SECRET"):
            return "absent"  # another process removed it meanwhile
        raise
    found.uuid = found.uuid or secret.UUIDString()
    if not is_owned(found):
        LOG.info("keeping secret %s: hvplug did not create it", found.uuid)
        return "kept: not hvplug's"
    needed = users(host, SecretRef.of(found))
    if needed:
        where = ", ".join(str(user) for user in needed)
        LOG.info("keeping secret %s: still used by %s", found.uuid, where)
        return f"kept: used by {where}"
    host.undefine_secret(secret)  # the one just read: no second lookup
    LOG.debug("removed secret %s of %s", found.uuid, found.usage_id)
    return "removed"


def owned_secrets(host) -> list[tuple[object, config.LibvirtConfigSecret]]:
    """``(virSecret, parsed)`` of every secret hvplug created on this host."""
    found = []
    for secret in host.list_secrets():
        try:
            conf = read_config(secret)
        except host.libvirt.libvirtError as exc:
            if host.is_code(exc, "VIR_ERR_NO_SECRET"):
                continue  # undefined since the listing
            raise
        conf.uuid = conf.uuid or secret.UUIDString()
        if is_owned(conf):
            found.append((secret, conf))
    return found
