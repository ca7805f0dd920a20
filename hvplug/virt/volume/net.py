"""Network disks: QEMU's built-in iSCSI initiator (libiscsi) through libvirt.

The host never logs in: QEMU connects to the target itself, with the host's
initiator IQN and, for CHAP, a private libvirt secret.

Example ``connection_info``::

    {"driver_volume_type": "iscsi",
     "data": {"target_portal": "[2001:db8::1]:3260",
              "target_iqn": "iqn.2010-10.org.openstack:volume-42",
              "target_lun": 1, "auth_method": "CHAP",
              "auth_username": "u", "auth_password": "p",
              "target_portals": ["[2001:db8::1]:3260", "192.0.2.11:3260"],
              "target_iqns": ["iqn...:volume-42", "iqn...:volume-42"],
              "target_luns": [1, 1]},
     "serial": "42"}
"""

import json
import logging
import os
from pathlib import Path

from hvplug import connection_schema, exception
from hvplug.conf import CONF
from hvplug.connection_schema import (
    ISCSITarget,
    chap_credentials,
    initiator_name,
    iscsi_targets,
)
from hvplug.utils import locks, portals
from hvplug.virt import config, secrets
from hvplug.virt.secrets import attribute_text as xmlutil_escape
from hvplug.virt.volume.base import LibvirtBaseVolumeDriver, VolumeConnection

LOG = logging.getLogger(__name__)

# QEMU passes libiscsi's login status through libvirt as
# VIR_ERR_INTERNAL_ERROR; its text is the only place the reason appears.
_LOGIN_STATUS_AUTHENTICATION = "Authentication failure"
_LOGIN_STATUS_AUTHORIZATION = "Authorization failure"
# tgtd answers an initiator its ACL refuses with "Target not found" (0x0203),
# as RFC 3720 allows for hidden targets, not with "Authorization failure".
_LOGIN_STATUS_TARGET_NOT_FOUND = "Target not found"


class LibvirtNetVolumeDriver(LibvirtBaseVolumeDriver):
    """iSCSI volumes as ``<disk type='network'>`` served by QEMU's initiator."""

    driver_volume_type = "iscsi"
    data_shape = connection_schema.ISCSI_NETWORK
    # The IQN QEMU logs in as (None: this host's, initiator_name()); a live
    # migration sets the destination's.  prove_new: prove the credentials
    # with a login before defining a new secret too (a migration does, so a
    # wrong destination password fails before the guest moves).
    initiator: str | None = None
    prove_new = False

    def initiator_iqn(self) -> str:
        return self.initiator or initiator_name()

    def validate(self, connection_info: dict) -> list[ISCSITarget]:
        """The document's shape, and no mutual CHAP: QEMU's iSCSI driver
        (libiscsi) never authenticates the target, so the target's
        credentials would be dropped without a word (Nova's old built-in
        path did exactly that)."""
        super().validate(connection_info)
        data = connection_info["data"]
        chap_credentials(data)
        mutual = [key for key in ("auth_username_in", "auth_password_in")
                  if not connection_schema.absent(data.get(key))]
        if mutual:
            raise exception.InvalidConnectionInfo(
                reason=f"data.{' and data.'.join(mutual)} ask for mutual CHAP, which QEMU's "
                "built-in iSCSI initiator cannot do (it never authenticates the target); "
                "attach it through the host's initiator instead: [libvirt] volume_drivers = "
                "iscsi=hvplug.virt.volume.iscsi.LibvirtISCSIVolumeDriver (with [libvirt] "
                "iscsi_iface), or leave the *_in keys out for one-way CHAP")
        return iscsi_targets(data)

    def select_target(self, connection_info: dict) -> ISCSITarget:
        """The first target, in order, whose portal answers an iSCSI login.

        Every portal gets one TCP connection (``iscsi_portal_probe_timeout``)
        and one Login Request without a password, answered within
        ``iscsi_login_probe_timeout`` (see :func:`_login_probed_target`), all
        before the domain is touched.  With that option 0: the first target
        whose portal accepts a TCP connection.
        """
        targets = self.validate(connection_info)
        if CONF.libvirt.iscsi_login_probe_timeout:
            return _login_probed_target(targets, chap_credentials(connection_info["data"]),
                                        self.initiator_iqn())
        timeout = CONF.libvirt.iscsi_portal_probe_timeout
        index = portals.first_answering([(t.host, t.port) for t in targets], timeout)
        if index is None:
            raise exception.TargetUnreachable(
                portals=", ".join(t.portal for t in targets), timeout=timeout)
        if index:
            LOG.warning("portal %s did not answer; using %s",
                        targets[0].portal, targets[index].portal)
        return targets[index]

    def lock_names(self, connection_info: dict) -> list[str]:
        """The secret-usage locks of every target the volume may be reached at."""
        return [locks.secret_lock_name("iscsi", t.source_name)
                for t in iscsi_targets(connection_info["data"])]

    def preflight(self, connection_info: dict) -> ISCSITarget:
        """The target to use: probed (TCP and a login) before the domain is touched."""
        return self.select_target(connection_info)

    def connect_volume(self, connection_info: dict, domain: str | None,
                       preflight: object = None) -> VolumeConnection:
        """The target (probed) and, with CHAP, hvplug's secret for it."""
        target = (preflight if isinstance(preflight, ISCSITarget)
                  else self.select_target(connection_info))
        credentials = chap_credentials(connection_info["data"])
        secret_uuid = None
        if credentials:
            secret_uuid = secrets.ensure_secret(
                self.host, self._secret_config(connection_info, target),
                credentials[1].encode(), prove=lambda: self.check_login(target, credentials),
                prove_new=self.prove_new)
        return VolumeConnection(connection_info, target=target, secret_uuid=secret_uuid)

    def connection_of(self, connection_info: dict,
                      disk: config.LibvirtConfigGuestDisk | None = None) -> VolumeConnection:
        """The target the disk reaches (else the first), and its secret reference."""
        connection = super().connection_of(connection_info, disk)
        targets = iscsi_targets(connection_info["data"])
        target = next((t for t in targets if disk is not None
                       and t.source_name == disk.source_name), targets[0])
        return connection._replace(target=target)

    def recreate_secret(self, connection_info: dict, source_name: str,
                        uuid: str | None = None) -> str | None:
        """Define the lost secret of an attached disk again (``hvplug reconcile``).

        The credentials are proven by a login first, so a wrong password
        never becomes a secret a disk depends on.  ``source_name``: the
        disk's ``<iqn>/<lun>``; ``uuid``: the secret uuid it references.
        Returns the secret's uuid; None without CHAP.
        """
        data = connection_info["data"]
        credentials = chap_credentials(data)
        if not credentials:
            return None
        targets = self.validate(connection_info)
        target = next((t for t in targets if t.source_name == source_name), targets[0])
        return secrets.ensure_secret(
            self.host, self._secret_config(connection_info, target), credentials[1].encode(),
            prove=lambda: self.check_login(target, credentials), uuid=uuid, prove_new=True)

    def check_login(self, target: ISCSITarget,
                    credentials: tuple[str, str]) -> exception.HvplugError | None:
        """Log in once with QEMU's own initiator (qemu-img); the error, if any."""
        try:
            self._qemu_img_info(target, credentials, parse=False)
        except exception.ProcessExecutionError as exc:
            return self.login_error(exc.stderr, target, credentials[0]) or exc
        return None

    def _qemu_img_info(self, target: ISCSITarget, credentials: tuple[str, str] | None,
                       parse: bool = True) -> dict:
        """``qemu-img info`` of the LUN through QEMU's own initiator, as this
        host's IQN; the password reaches qemu-img in a root-only file, never
        in argv."""
        import tempfile  # here: only extend and the preflight read a LUN's size

        with tempfile.TemporaryDirectory(prefix="hvplug-") as tmp:
            opts = (f"driver=iscsi,transport=tcp,portal={target.portal},"
                    f"target={target.iqn},lun={target.lun},initiator-name={self.initiator_iqn()}")
            secret_args: list[str] = []
            if credentials:
                password_file = Path(tmp) / "chap"
                fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(credentials[1])
                opts += f",user={credentials[0]},password-secret=chap"
                secret_args = ["--object", f"secret,id=chap,file={password_file}"]
            output = ("--output", "json") if parse else ()
            out, _ = self.execute("qemu-img", "info", *output, *secret_args,
                                  "--image-opts", opts, timeout=30,
                                  secrets=(credentials[1],) if credentials else ())
        return json.loads(out) if parse else {}

    def volume_size(self, connection_info: dict) -> int:
        """The LUN's size now, in bytes, read through QEMU's initiator (the
        CHAP password is needed: a ``connection_info`` rebuilt from a disk
        has none)."""
        data = connection_info["data"]
        if data.get("auth_method", "").upper() == "CHAP" and not data.get("auth_password"):
            raise exception.InvalidInput(
                reason="the new size of a CHAP volume is read from the target with its "
                "credentials: give its connection_info (--connection-info F) or the size "
                "(--size)")
        target = self.select_target(connection_info)
        try:
            return int(self._qemu_img_info(target, chap_credentials(data))["virtual-size"])
        except exception.ProcessExecutionError as exc:
            raise (self.login_error(exc.stderr, target, (chap_credentials(data) or ("",))[0])
                   or exc) from None

    def secret_config(self, connection_info: dict,
                      target: ISCSITarget | None = None) -> config.LibvirtConfigSecret | None:
        """Private, persistent, usage ``iscsi`` keyed by ``<iqn>/<lun>`` of
        ``target`` (default: the first)."""
        if not chap_credentials(connection_info["data"]):
            return None
        source_name = (target or iscsi_targets(connection_info["data"])[0]).source_name
        conf = config.LibvirtConfigSecret()
        conf.ephemeral, conf.private = False, True
        conf.description = secrets.owned_description(source_name)
        conf.usage_type, conf.usage_id = "iscsi", source_name
        return conf

    def _secret_config(self, connection_info: dict,
                       target: ISCSITarget) -> config.LibvirtConfigSecret:
        """secret_config of a volume with CHAP (which every caller checked)."""
        conf = self.secret_config(connection_info, target)
        if conf is None:
            raise exception.InvalidConnectionInfo(
                reason="CHAP needs data.auth_username and data.auth_password")
        return conf

    def get_config(self, connection: VolumeConnection,
                   disk_info: dict) -> config.LibvirtConfigGuestDisk:
        conf = super().get_config(connection, disk_info)
        target = connection.target or iscsi_targets(connection.data)[0]
        conf.source_type = "network"
        conf.source_protocol = "iscsi"
        conf.source_name = target.source_name
        conf.source_hosts = [(target.host, str(target.port))]
        conf.source_initiator_iqn = self.initiator_iqn()
        credentials = chap_credentials(connection.data)
        if credentials:
            conf.auth_username = credentials[0]
            conf.auth_secret_type = "iscsi"  # noqa: S105 - a secret type, not a secret
            conf.auth_secret_uuid = connection.secret_uuid
        return conf

    def disconnect_volume(self, connection: VolumeConnection, domain: str | None) -> None:
        """Remove the CHAP secret if hvplug made it and nothing needs it any more.

        The secret is the one the disk referenced (``secret_uuid`` or
        ``secret_usage``), else the one of each target's usage.
        """
        if connection.secret_uuid:
            found = [self.host.secret_by_uuid(connection.secret_uuid)]
        else:
            usages = ([connection.secret_usage] if connection.secret_usage
                      else [t.source_name for t in iscsi_targets(connection.data)])
            found = [self.host.find_secret("iscsi", usage) for usage in usages]
        for secret in filter(None, found):
            secrets.release_secret(self.host, secret)

    def is_same_volume(self, disk: config.LibvirtConfigGuestDisk,
                       connection_info: dict) -> bool:
        names = {t.source_name for t in self.validate(connection_info)}
        return self.handles_disk(disk) and disk.source_name in names

    def disk_needles(self, connection_info: dict) -> list[str]:
        """``<iqn>/<lun>`` of each target, as libvirt writes it in an attribute."""
        return [xmlutil_escape(t.source_name) for t in iscsi_targets(connection_info["data"])]

    @classmethod
    def handles_disk(cls, disk: config.LibvirtConfigGuestDisk) -> bool:
        return disk.source_type == "network" and disk.source_protocol == "iscsi"

    @classmethod
    def connection_info_from_disk(cls, disk: config.LibvirtConfigGuestDisk) -> dict:
        iqn, _, lun = (disk.source_name or "").rpartition("/")
        host, port = disk.source_hosts[0] if disk.source_hosts else ("", None)
        data = {"target_iqn": iqn, "target_lun": int(lun) if lun.isdigit() else lun,
                "target_portal": portals.format_portal(host, int(port or portals.DEFAULT_ISCSI_PORT))}
        if disk.auth_secret_uuid or disk.auth_secret_usage:
            data.update(auth_method="CHAP", auth_username=disk.auth_username)
        if disk.auth_secret_uuid:
            data["secret_uuid"] = disk.auth_secret_uuid
        elif disk.auth_secret_usage:
            data["secret_usage"] = disk.auth_secret_usage
        return {"driver_volume_type": cls.driver_volume_type, "data": data,
                "serial": disk.serial}

    def attach_error(self, message: str,
                     connection: VolumeConnection) -> exception.HvplugError | None:
        username = (chap_credentials(connection.data) or ("(none)",))[0]
        target = connection.target or iscsi_targets(connection.data)[0]
        return self.login_error(message, target, username)

    def login_error(self, message: str, target: ISCSITarget,
                    username: str) -> exception.HvplugError | None:
        """The precise error for libiscsi's login status in ``message``, if any."""
        where = {"target": target.source_name, "portal": target.portal}
        if _LOGIN_STATUS_AUTHENTICATION in message:
            return exception.AuthenticationFailed(username=username, **where)
        if _LOGIN_STATUS_AUTHORIZATION in message:
            return exception.AuthorizationFailed(initiator=self.initiator_iqn(), **where)
        if _LOGIN_STATUS_TARGET_NOT_FOUND in message:
            return exception.TargetNotFound(initiator=self.initiator_iqn(), **where)
        return None


def _login_probed_target(targets: list[ISCSITarget], credentials: tuple[str, str] | None,
                         initiator: str) -> ISCSITarget:
    """The first of ``targets`` whose portal answers a login QEMU can go on with.

    All portals are probed at once (``hvplug.initiator.login_probe``: TCP,
    then one Login Request offering ``AuthMethod=CHAP,None``; the password
    is never needed).  A target that admits, asks for CHAP (when
    ``credentials`` has some) or redirects is usable; an unreachable, silent
    or refusing one is skipped, with a warning, for the next.  None usable:
    the first refusal's error (a target that answered says the most), else
    TargetNotAnswering for the silent portals, else TargetUnreachable.
    """
    from hvplug.initiator import login_probe

    def usable(result) -> bool:
        return result.answered and (
            credentials is not None or result.outcome is not login_probe.Outcome.AUTH_REQUIRED)

    results = login_probe.probe_in_order(
        [(t.host, t.port, t.iqn) for t in targets], usable, initiator=initiator,
        connect_timeout=CONF.libvirt.iscsi_portal_probe_timeout,
        login_timeout=CONF.libvirt.iscsi_login_probe_timeout)
    if usable(results[-1]):
        chosen = targets[len(results) - 1]
        for target, result in zip(targets, results[:-1], strict=False):
            LOG.warning("portal %s skipped (target %s: %s); using %s", target.portal,
                        target.iqn, result.detail or result.outcome.value, chosen.portal)
        LOG.debug("target %s at %s answered the login probe: %s", chosen.iqn,
                  chosen.portal, results[-1].detail)
        return chosen
    raise _login_probe_error(targets, results, credentials, initiator)


def _login_probe_error(targets: list[ISCSITarget], results: list,
                       credentials: tuple[str, str] | None,
                       initiator: str) -> exception.HvplugError:
    """The error for login probes of which none found a usable target."""
    from hvplug.initiator.login_probe import Outcome

    pairs = list(zip(targets, results, strict=False))
    for target, result in pairs:
        where = {"target": target.source_name, "portal": target.portal}
        if result.outcome is Outcome.NOT_FOUND:
            return exception.TargetNotFound(initiator=initiator, **where)
        if result.outcome is Outcome.AUTHORIZATION_FAILED:
            return exception.AuthorizationFailed(initiator=initiator, **where)
        if result.outcome is Outcome.AUTHENTICATION_FAILED:
            return exception.AuthenticationFailed(
                username=credentials[0] if credentials else "(none)", **where)
        if result.outcome is Outcome.AUTH_REQUIRED:
            return exception.TargetRequiresChap(method=result.auth_method or "CHAP", **where)
        if result.outcome is Outcome.REFUSED:
            return exception.TargetLoginRefused(initiator=initiator,
                                                status=result.detail, **where)
    silent = [(t, r) for t, r in pairs if r.outcome is Outcome.NO_ANSWER]
    if silent:
        return exception.TargetNotAnswering(
            target=silent[0][0].source_name, portals=", ".join(t.portal for t, _ in silent),
            reason=silent[0][1].detail, timeout=CONF.libvirt.iscsi_login_probe_timeout)
    return exception.TargetUnreachable(portals=", ".join(t.portal for t in targets),
                                       timeout=CONF.libvirt.iscsi_portal_probe_timeout)
