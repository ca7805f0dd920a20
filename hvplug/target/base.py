"""The Target contract and the iSCSI export flow every helper shares.

A helper (tgt, LIO, IET, chiscsi) only says how to create, find and remove
one target; the rest -- IQNs, CHAP credentials, portals, the export record
and the ``connection_info`` the hypervisor side consumes -- lives here::

    target = registry.target_from_conf(CONF.target)
    export = target.create_export("4f1c...", "/srv/volumes/4f1c.img")
    target.initialize_connection("4f1c...", {"initiator": "iqn.1993-08.org.debian:01:ab"})
    {"driver_volume_type": "iscsi",
     "data": {"target_portal": "192.0.2.10:3260",
              "target_iqn": "iqn.2010-10.org.openstack:volume-4f1c...",
              "target_lun": 1, "target_discovered": False, "volume_id": "4f1c...",
              "auth_method": "CHAP", "auth_username": "...", "auth_password": "...",
              "encrypted": False, "access_mode": "rw"}}
"""

import abc
import logging
import re
import secrets
import string

from hvplug import exception
from hvplug.target.export import Export, ExportStore, check_volume_id
from hvplug.utils import executor, fileutils, portals

LOG = logging.getLogger(__name__)

_CHAP_ALPHABET = string.ascii_letters + string.digits


def random_chap(length: int) -> str:
    """A CHAP user or password from the OS's cryptographic RNG."""
    return "".join(secrets.choice(_CHAP_ALPHABET) for _ in range(length))


def iser_enabled(conf) -> bool:
    """``enable_iser``, Cinder's ``iscsi_protocol = iser``, or the old iseradm."""
    return bool(conf.enable_iser or conf.iscsi_protocol == "iser"
                or conf.iscsi_helper == "iseradm")


def check_config_values(export: Export, unsafe: "re.Pattern[str]", where: str,
                        rule: str) -> None:
    """Refuse export values a helper's config syntax would mangle or let inject.

    Checks the backing path and, when the export uses CHAP, the user and
    password (the password never shown).  ``where`` names the syntax ("a tgt stanza"), ``rule`` says what
    is allowed.
    """
    values = {"backing store path": export.path}
    if export.auth_method == "CHAP":  # an empty user or password is refused, not dropped
        values.update({"CHAP user name": export.auth_username,
                       "CHAP password": export.auth_password})
    for name, value in values.items():
        if not value or unsafe.search(value):
            shown = "" if name == "CHAP password" else f" {value!r}"
            raise exception.InvalidInput(
                reason=f"{name}{shown} cannot go into {where}: it must be non-empty, {rule}")


class Target(abc.ABC):
    """Export volumes and hand out the ``connection_info`` for them."""

    @abc.abstractmethod
    def create_export(self, volume_id: str, path: str) -> Export:
        """Export ``path`` as volume ``volume_id``; idempotent."""

    @abc.abstractmethod
    def ensure_export(self, volume_id: str) -> Export:
        """Re-create the export from its record if the daemon lost it."""

    @abc.abstractmethod
    def remove_export(self, volume_id: str) -> None:
        """Tear the export down; a target already gone is fine."""

    @abc.abstractmethod
    def initialize_connection(self, volume_id: str, connector: dict) -> dict:
        """The ``connection_info`` for ``connector`` (``{"initiator": IQN, ...}``)."""

    @abc.abstractmethod
    def terminate_connection(self, volume_id: str, connector: dict) -> None:
        """Revoke what ``initialize_connection`` granted ``connector``."""


class ISCSITarget(Target):
    """The shared iSCSI flow; subclasses implement the ``_target_*`` hooks."""

    helper_name = ""
    supports_iser = False

    def __init__(self, conf, execute=None, store: ExportStore | None = None,
                 iser: bool | None = None):
        self.conf = conf
        self.execute = execute or executor.execute
        self.store = store or ExportStore(conf.exports_dir)
        self.iser = iser_enabled(conf) if iser is None else iser
        if self.iser and not self.supports_iser:
            raise exception.InvalidInput(
                reason=f"enable_iser is set but the {self.helper_name} helper cannot "
                "export over iSER; use tgtadm or lioadm, or turn enable_iser off")

    # -- the hooks a helper implements ---------------------------------------
    @abc.abstractmethod
    def _target_create(self, export: Export) -> int | None:
        """Create the live target, LUN and CHAP account and persist its config.

        Returns the tid (where the daemon has one).  Must leave nothing
        behind when it fails.
        """

    @abc.abstractmethod
    def _target_exists(self, export: Export) -> bool:
        """Whether the daemon serves ``export`` right now."""

    @abc.abstractmethod
    def _target_remove(self, export: Export) -> None:
        """Remove the live target and its persisted config; tolerate absence."""

    def _grant(self, export: Export, initiator: str) -> None:
        """Admit ``initiator`` (per-initiator ACLs, e.g. LIO); default: no-op."""

    def _revoke(self, export: Export, initiator: str) -> None:
        """Undo ``_grant``; default: no-op."""

    # -- the shared flow -----------------------------------------------------
    @property
    def driver_volume_type(self) -> str:
        return "iser" if self.iser else "iscsi"

    def iqn(self, volume_id: str) -> str:
        """Prefix + ``volume-<id>``, lower-cased: iSCSI names compare without
        case, and LIO and chiscsi store them lower-cased."""
        return f"{self.conf.iscsi_target_prefix}volume-{volume_id}".lower()

    def portals(self) -> list[str]:
        """``ip:port`` of every address, IPv6 bracketed, primary first."""
        addresses = [self.conf.iscsi_ip_address, *self.conf.iscsi_secondary_ip_addresses]
        return [portals.format_portal(a.strip("[]"), self.conf.iscsi_port)
                for a in addresses if a]

    def new_export(self, volume_id: str, path: str) -> Export:
        """A record for a new export, with fresh CHAP credentials."""
        return Export(volume_id=volume_id, path=path, iqn=self.iqn(volume_id),
                      helper=self.helper_name, portals=self.portals(),
                      auth_username=random_chap(20), auth_password=random_chap(16),
                      iser=self.iser)

    def export(self, volume_id: str) -> Export:
        found = self.store.load(check_volume_id(volume_id))
        if found is None:
            raise exception.ExportNotFound(volume_id=volume_id)
        return found

    def create_export(self, volume_id: str, path: str) -> Export:
        check_volume_id(volume_id)
        # Record and target change together: two creates of one volume must
        # not interleave (the helpers' own locks cover only their daemon).
        with fileutils.locked(fileutils.private_dir(self.store.directory)):
            return self._create_export(volume_id, path)

    def _create_export(self, volume_id: str, path: str) -> Export:
        export = self.store.load(volume_id)
        if export is not None and export.path != path:
            raise exception.InvalidInput(
                reason=f"volume {volume_id} is already exported from {export.path}; "
                "remove that export first")
        if export is None:
            export = self.new_export(volume_id, path)
        elif self._target_exists(export):
            return export
        export.tid = self._target_create(export)
        self.store.save(export)
        LOG.info("exported %s as %s (tid %s)", path, export.iqn, export.tid)
        return export

    def ensure_export(self, volume_id: str) -> Export:
        export = self.export(volume_id)
        if not self._target_exists(export):
            LOG.warning("target %s is missing; re-creating it", export.iqn)
            export.tid = self._target_create(export)
            self.store.save(export)
        return export

    def ensure_exports(self) -> list[Export]:
        """``ensure_export`` for every recorded export of this helper."""
        return [self.ensure_export(e.volume_id) for e in self.store.all()
                if e.helper == self.helper_name]

    def remove_export(self, volume_id: str) -> None:
        check_volume_id(volume_id)
        with fileutils.locked(fileutils.private_dir(self.store.directory)):
            export = self.store.load(volume_id)
            if export is None:
                raise exception.ExportNotFound(volume_id=volume_id)
            self._target_remove(export)
            self.store.remove(volume_id)

    def initialize_connection(self, volume_id: str, connector: dict | None = None) -> dict:
        connector = connector or {}
        export = self.export(volume_id)
        initiator = connector.get("initiator")
        if initiator and initiator not in export.initiators:
            self._grant(export, initiator)
            export.initiators.append(initiator)
            self.store.save(export)
        return {"driver_volume_type": self.driver_volume_type,
                "data": self.connection_data(export, bool(connector.get("multipath"))),
                "serial": export.volume_id}

    def connection_data(self, export: Export, multipath: bool = False) -> dict:
        data = {"target_discovered": False, "target_portal": export.portals[0],
                "target_iqn": export.iqn, "target_lun": int(export.lun),
                "volume_id": export.volume_id, "encrypted": False, "access_mode": "rw"}
        if export.auth_method == "CHAP":
            data.update(auth_method="CHAP", auth_username=export.auth_username,
                        auth_password=export.auth_password)
        if multipath or len(export.portals) > 1:
            count = len(export.portals)
            data.update(target_portals=list(export.portals),
                        target_iqns=[export.iqn] * count,
                        target_luns=[int(export.lun)] * count)
        return data

    def terminate_connection(self, volume_id: str, connector: dict | None = None) -> None:
        export = self.export(volume_id)
        initiator = (connector or {}).get("initiator")
        if initiator and initiator in export.initiators:
            self._revoke(export, initiator)
            export.initiators.remove(initiator)
            self.store.save(export)
