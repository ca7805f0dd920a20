"""The one exception hierarchy of hvplug.

Every error carries a message template; a subclass states its template and,
where it is the user's doing, exit code 2.  Messages name the cause and the
fix.  Keyword values are formatted with ``%`` so a template missing a key
fails loudly in tests rather than printing half a message.

Errors are grouped by area, each with a base class (``HypervisorError``,
``SecretError``, ``InitiatorError``, ``TargetSideError``, ``ISEError``,
``FibreChannelError``, ``DependencyMissing``); bad input is
``InvalidInput`` (exit 2), also where it belongs to an area (``class
IqnInUse(TargetSideError, InvalidInput)``).  Every error of hvplug is
defined here, and every message is a template: no call site makes up a
message of its own.

Nothing here may ever receive a CHAP password: callers pass usernames,
targets and portals only.
"""

from hvplug.utils import masking

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class HvplugError(Exception):
    """Base class: an operation failed (exit code 1)."""

    msg_fmt = "An unknown error occurred."
    exit_code = EXIT_FAILED

    def __init__(self, message: str | None = None, **kwargs):
        # A value under a secret-looking key never reaches a message.
        kwargs = masking.mask_dict(kwargs)
        self.kwargs = kwargs
        if message is None:
            message = self.msg_fmt % kwargs
        self.message = message
        super().__init__(message)


class InvalidInput(HvplugError):
    """The user asked for something malformed (exit code 2)."""

    msg_fmt = "Invalid input: %(reason)s"
    exit_code = EXIT_BAD_INPUT


# -- the areas: catch one of these to handle every error of that part ---------

class HypervisorError(HvplugError):
    """libvirt, a domain, its disks: the hypervisor side (hvplug.virt)."""


class SecretError(HvplugError):
    """A libvirt secret hvplug would use or change."""


class InitiatorError(HvplugError):
    """Reaching a target as an initiator: portals, logins, ifaces, devices."""


class TargetSideError(HvplugError):
    """Exporting volumes: the target helpers, tgtd, export records."""


class ISEError(HvplugError):
    """The X-IO ISE storage backend and its REST API."""


class FibreChannelError(HvplugError):
    """Host-attached Fibre Channel volumes."""


class DependencyMissing(HvplugError):
    """An optional Python package a feature needs is not installed."""


class InvalidConnectionInfo(InvalidInput):
    msg_fmt = (
        "Invalid connection_info: %(reason)s. Pass the JSON that the storage "
        "side's initialize_connection returned "
        '({"driver_volume_type": ..., "data": {...}}).'
    )


class InvalidVolumeDriverEntry(InvalidInput):
    msg_fmt = (
        "Bad [libvirt] volume_drivers entry '%(entry)s': %(reason)s. "
        "Entries are 'type=dotted.path.Class', e.g. "
        "'iscsi=hvplug.virt.volume.net.LibvirtNetVolumeDriver'."
    )


class VolumeDriverNotFound(InvalidInput):
    msg_fmt = (
        "No volume driver for driver_volume_type '%(driver_type)s' "
        "(known: %(known)s). Add 'TYPE=dotted.path.Class' to "
        "[libvirt] volume_drivers."
    )


class ConfigFileError(InvalidInput):
    msg_fmt = (
        "Cannot read configuration: %(reason)s. Fix the file (every option is "
        "listed by 'oslo-config-generator --namespace hvplug') or name another "
        "with --config-file."
    )


class InvalidDeviceName(InvalidInput):
    msg_fmt = "Invalid target device '%(dev)s' for bus '%(bus)s': %(reason)s."


class ProcessExecutionError(HvplugError):
    msg_fmt = "%(cmd)s exited %(status)s: %(stderr)s"

    @property
    def stderr(self) -> str:
        return self.kwargs.get("stderr", "")


class LibvirtConnectionFailed(HypervisorError):
    msg_fmt = (
        "Cannot connect to libvirt at %(uri)s: %(reason)s. Is libvirtd "
        "running? ('systemctl start libvirtd' starts it; '--connect URI' or "
        "[libvirt] connection_uri picks another.)"
    )


class LibvirtError(HypervisorError):
    msg_fmt = (
        "libvirt failed to %(action)s: %(reason)s. Check the domain and "
        "libvirtd's log (/var/log/libvirt/), then retry."
    )


class DomainNotFound(HypervisorError):
    msg_fmt = (
        "Domain '%(domain)s' not found on %(uri)s: domain missing. "
        "Check the name with 'virsh list --all'."
    )


class DomainNotRunning(HypervisorError):
    msg_fmt = (
        "Domain '%(domain)s' is not running, so nothing can be attached "
        "live. Start it, or use --persistent alone to change only its "
        "configuration."
    )


class TargetUnreachable(InitiatorError):
    msg_fmt = (
        "iSCSI target unreachable: no portal of %(portals)s accepted a TCP "
        "connection within %(timeout)s s. Check the target is running and "
        "the address and port are right ([libvirt] "
        "iscsi_portal_probe_timeout sets the wait)."
    )


class AuthenticationFailed(InitiatorError):
    msg_fmt = (
        "CHAP authentication failed: target %(target)s at %(portal)s "
        "rejected user '%(username)s'. Check auth_username/auth_password "
        "against the target's account."
    )


class AuthorizationFailed(InitiatorError):
    msg_fmt = (
        "Target %(target)s at %(portal)s refused initiator %(initiator)s "
        "(initiator ACL). Grant this IQN on the target, or set "
        "[libvirt] iscsi_initiator_name to an IQN it admits."
    )


class TargetNotFound(InitiatorError):
    msg_fmt = (
        "Target %(target)s at %(portal)s answered 'Target not found' to "
        "initiator %(initiator)s: either no such target is exported there, "
        "or its initiator ACL does not admit this initiator (tgtd hides "
        "targets from initiators it refuses). Check target_iqn, grant this "
        "IQN on the target, or set [libvirt] iscsi_initiator_name to an IQN "
        "it admits."
    )


class TargetNotAnswering(InitiatorError):
    msg_fmt = (
        "iSCSI target %(target)s: portal %(portals)s accepted a TCP "
        "connection but %(reason)s ([libvirt] iscsi_login_probe_timeout, now "
        "%(timeout)s s, sets the wait). The domain was not touched. "
        "Check that an iSCSI target, not another service, listens on that "
        "address and port and that it is not hung (its logs; 'tgtadm --lld "
        "iscsi --mode target --op show' for tgtd), or raise "
        "iscsi_login_probe_timeout for a slow target."
    )


class TargetRequiresChap(InitiatorError):
    msg_fmt = (
        "Target %(target)s at %(portal)s requires %(method)s authentication, "
        "but the connection_info has no CHAP credentials. Pass auth_method "
        "'CHAP' with auth_username and auth_password as the storage side "
        "returned them, or remove the account from the target."
    )


class TargetLoginRefused(InitiatorError):
    msg_fmt = (
        "Target %(target)s at %(portal)s refused the iSCSI login of "
        "initiator %(initiator)s: %(status)s. Check the target's state and "
        "logs; retry once it accepts logins again."
    )


class InitiatorNameNotFound(InitiatorError):
    msg_fmt = (
        "Cannot read this host's iSCSI initiator name from %(path)s: "
        "%(reason)s. Install open-iscsi or set [libvirt] "
        "iscsi_initiator_name."
    )


class VolumeAlreadyAttached(HypervisorError):
    msg_fmt = (
        "Volume %(volume)s is already attached to domain '%(domain)s' as "
        "%(dev)s; detach it first."
    )


class VolumeNotAttached(HypervisorError):
    msg_fmt = (
        "%(what)s is not attached to domain '%(domain)s'; nothing "
        "was changed."
    )


class VolumeIsBackingLayer(HypervisorError):
    msg_fmt = (
        "Volume %(volume)s is already in domain '%(domain)s': it is %(layer)s "
        "of disk %(dev)s (after an external snapshot or a block job). "
        "Attaching it again would open it twice; merge the chain first "
        "(virsh blockcommit %(domain)s %(dev)s --active --pivot) or detach %(dev)s."
    )


class ManagedSaveConflict(HypervisorError):
    msg_fmt = (
        "Domain '%(domain)s' has a managed save image, and libvirt cannot "
        "change the disks of a saved image, so %(action)s now would leave "
        "that image and the domain disagreeing. Start the domain (virsh "
        "start %(domain)s) and retry, or discard the image first (virsh "
        "managedsave-remove %(domain)s)."
    )


class ForeignSecretUnusable(SecretError):
    msg_fmt = (
        "Secret %(uuid)s (usage %(usage_type)s '%(usage)s') was not created by hvplug "
        "and cannot be used: %(reason)s. hvplug never changes or deletes a "
        "secret it did not create; %(fix)s."
    )


class ForeignSecretMismatch(SecretError):
    msg_fmt = (
        "Secret %(uuid)s (usage iscsi '%(usage)s') was not created by hvplug "
        "and disk '%(dev)s' of domain '%(domain)s' references it; hvplug "
        "does not re-create or overwrite it. %(fix)s"
    )


class SecretUsageTaken(SecretError):
    msg_fmt = (
        "Cannot re-create secret %(uuid)s for usage iscsi '%(usage)s': secret "
        "%(holder)s already has that usage, and libvirt allows one secret per "
        "usage. Point the disk at %(holder)s (virsh edit) or undefine "
        "%(holder)s if it is not needed, then run hvplug reconcile again."
    )


# -- encrypted volumes: the LUKS passphrase and its secret --------------------
# A passphrase never reaches a message: callers pass volume names and paths.

class PassphraseMissing(SecretError, InvalidInput):
    msg_fmt = (
        "Volume %(volume)s is encrypted (encrypted: true in its connection_info) "
        "but no passphrase was given. Pass --passphrase-file FILE (a file that "
        "holds the volume's LUKS passphrase, readable by its owner only), or set "
        "[libvirt] volume_key_dir to a directory of such files named by volume "
        "id (here %(volume)s). Nothing was changed."
    )


class PassphraseKeyFileMissing(SecretError, InvalidInput):
    msg_fmt = (
        "Volume %(volume)s is encrypted, but [libvirt] volume_key_dir has no "
        "key file %(path)s. Put the volume's LUKS passphrase there (mode "
        "0600), or pass --passphrase-file FILE. Nothing was changed."
    )


class PassphraseNotNeeded(SecretError, InvalidInput):
    msg_fmt = (
        "A passphrase was given for volume %(volume)s, which is not encrypted "
        "(its connection_info has no encrypted: true). Leave --passphrase-file "
        "out, or pass the connection_info of the encrypted volume. Nothing was "
        "changed."
    )


class PassphraseFileUnsafe(SecretError, InvalidInput):
    msg_fmt = (
        "Passphrase file %(path)s (%(what)s) is %(reason)s (mode %(mode)s); "
        "a file that holds a passphrase must be readable by its owner only. "
        "Run 'chmod 600 %(path)s' and retry. Nothing was changed."
    )


class PassphraseFileUnreadable(SecretError, InvalidInput):
    msg_fmt = (
        "Cannot read a passphrase from %(path)s (%(what)s): %(reason)s. "
        "Nothing was changed."
    )


class PassphraseRejected(SecretError):
    msg_fmt = (
        "QEMU could not open encrypted volume %(volume)s on domain "
        "'%(domain)s': the passphrase unlocks none of its LUKS key slots "
        "(%(reason)s).%(undone)s Check the passphrase (--passphrase-file, or "
        "the volume's file in [libvirt] volume_key_dir): it is the file's "
        "bytes exactly, a trailing newline included."
    )


class NotALuksVolume(SecretError):
    msg_fmt = (
        "Volume %(volume)s is marked encrypted, but QEMU found no LUKS header "
        "on it (%(reason)s).%(undone)s Attach it without encrypted: true if "
        "it holds plain data, or check that this is the volume meant."
    )


class LockTimeout(HvplugError):
    msg_fmt = (
        "Gave up after %(timeout)s s waiting for lock %(name)s, held by "
        "%(holder)s. Wait for that operation to end and retry, or raise "
        "[locks] lock_timeout."
    )


class Interrupted(HvplugError):
    msg_fmt = "Interrupted by %(signal)s; %(what)s."


class DeviceNameInUse(HypervisorError):
    msg_fmt = (
        "Target device %(dev)s is already in use on domain '%(domain)s'; "
        "pick another --dev or leave it out to choose a free one."
    )


class NoFreeDeviceName(HypervisorError):
    msg_fmt = "No free target device name left on bus '%(bus)s' of '%(domain)s'."


class AttachFailed(HypervisorError):
    msg_fmt = (
        "Attaching volume %(volume)s to domain '%(domain)s' failed: "
        "%(reason)s.%(undone)s"
    )


class MigrationFailed(HypervisorError):
    msg_fmt = (
        "Migrating domain '%(domain)s' to %(destination)s failed: %(reason)s. The "
        "domain still runs here, unchanged; %(undone)s"
    )


class DeviceDetachTimeout(HypervisorError):
    msg_fmt = (
        "Device %(dev)s is still in the live configuration of domain "
        "'%(domain)s' after %(timeout)s s: the guest did not release it "
        "(virtio-blk unplug needs a guest OS to acknowledge; bus 'scsi' "
        "does not). Retry later or raise [libvirt] device_detach_timeout."
    )


class ExportNotFound(TargetSideError):
    msg_fmt = (
        "No export of volume %(volume_id)s is recorded here; create it with "
        "'hvplug target create-export' (see 'hvplug target list')."
    )


class IserUnavailable(TargetSideError):
    msg_fmt = (
        "iSER/RDMA is unavailable on this target host: %(reason)s. Install "
        "RDMA hardware and the target's iSER support, or turn enable_iser "
        "off. Nothing was persisted."
    )


class TargetError(TargetSideError):
    msg_fmt = "%(helper)s could not %(action)s target %(iqn)s: %(reason)s"


# -- target side: what an export may be, and records that cannot be read -----
# Values a user typed reach these templates already repr()-quoted by the caller.

class ExportRecordCorrupt(TargetSideError):
    msg_fmt = (
        "Export record %(path)s is unreadable: %(reason)s. hvplug skipped it "
        "and went on with every other export. Restore the file from a "
        "backup, or, once you have checked that no target serves it any "
        "more, move it out of [target] exports_dir."
    )


class ExportsIncomplete(TargetSideError):
    msg_fmt = (
        "%(failed)s of %(total)s export records could not be %(action)s (each "
        "is named above); the other %(done)s were. Fix each as its message "
        "says, then run 'hvplug target %(command)s' again."
    )


class VolumeIdCaseCollision(TargetSideError, InvalidInput):
    msg_fmt = (
        "Volume id %(volume_id)s differs only in case from the recorded export "
        "%(other)s (%(record)s); IQNs ignore case, so both would be target "
        "%(iqn)s. Nothing was created or changed. Use %(other)s to mean that "
        "volume, or pick a volume id that differs in more than case."
    )


class IqnInUse(TargetSideError, InvalidInput):
    msg_fmt = (
        "Target %(iqn)s already serves %(other_path)s (%(owner)s), not "
        "%(path)s; hvplug never replaces a target that exports another file. "
        "Nothing was created or changed. %(fix)s"
    )


class BackingPathRefused(TargetSideError, InvalidInput):
    msg_fmt = (
        "Backing path %(path)s cannot be exported: %(reason)s. hvplug exports "
        "only regular files and block devices that resolve (symlinks "
        "followed) inside [target] backing_roots (now %(roots)s) and are not "
        "its own state. %(fix)s"
    )


class BackingFileFailed(TargetSideError):
    msg_fmt = (
        "Could not %(action)s backing file %(path)s: %(reason)s. Nothing was "
        "left behind. %(fix)s"
    )


class IfaceHardwareNotFound(InitiatorError):
    msg_fmt = (
        "No %(transport)s hardware for %(hwaddress)s on this host: "
        "%(reason)s. Check the address against 'iscsiadm -m host -P 1' and "
        "'ip link', load the adapter's driver, or use another iface "
        "([libvirt] iscsi_iface)."
    )


class IfaceNotFound(InitiatorError):
    msg_fmt = (
        "No open-iscsi iface record '%(name)s'. List the records with "
        "'hvplug iface list'; create one with 'hvplug iface create'."
    )


class IfaceConflict(InitiatorError):
    msg_fmt = (
        "The iface record '%(name)s' already exists with %(difference)s. "
        "Delete it first ('hvplug iface delete %(name)s') or choose another "
        "name."
    )


class IfaceCommandFailed(InitiatorError):
    msg_fmt = "iscsiadm could not %(action)s iface record '%(name)s': %(reason)s"


class ProcessTimeout(ProcessExecutionError):
    """A command that gave no answer within its timeout."""

    msg_fmt = "%(cmd)s gave no answer within %(timeout)s s"


class IfaceUnusable(InitiatorError):
    msg_fmt = (
        "open-iscsi iface '%(iface)s' cannot be used: %(reason)s. Fix the "
        "iface ('hvplug iface show %(iface)s'), set [libvirt] iscsi_iface to "
        "one that works, or set iscsi_iface_fallback = true to fall back to "
        "'default' (software TCP). Nothing was changed."
    )


class ISCSIDiscoveryFailed(InitiatorError):
    msg_fmt = (
        "iSCSI discovery at %(portal)s through iface '%(iface)s' failed: "
        "%(reason)s. Check the portal address, the target and the network "
        "path of that iface."
    )


class ISCSILoginFailed(InitiatorError):
    msg_fmt = (
        "iSCSI login to %(iqn)s at %(portal)s through iface '%(iface)s' "
        "failed: %(reason)s. Its session and node record were removed."
    )


class ISCSILoginTimeout(InitiatorError):
    msg_fmt = (
        "iSCSI login to %(iqn)s at %(portal)s through iface '%(iface)s' gave "
        "no answer within %(timeout)s s; its session and node record were "
        "removed. Check the target and the path of that iface (an offload "
        "port needs its own IP setup), or raise [libvirt] iscsi_login_timeout."
    )


class ISCSIDeviceNotFound(InitiatorError):
    msg_fmt = (
        "No block device appeared for LUN %(lun)s of %(iqn)s at %(portal)s "
        "after %(tries)s scans (looked for %(pattern)s). Check that the "
        "target maps that LUN to this initiator, or raise [libvirt] "
        "num_iscsi_scan_tries. A session opened for it was logged out and its "
        "node record removed."
    )


class NodeRecordNotFound(InitiatorError):
    msg_fmt = (
        "No open-iscsi node record for %(iqn)s at %(portal)s with iface "
        "'%(iface)s' under %(nodes_dir)s, so its CHAP settings cannot be "
        "written."
    )


class BackendNotFound(InvalidInput):
    msg_fmt = (
        "No volume backend '%(backend)s' is enabled (known: %(known)s). Name "
        "it in [DEFAULT] enabled_backends and give it a section [%(backend)s] "
        "with volume_driver and its options."
    )


class InvalidBackendDriver(InvalidInput):
    msg_fmt = (
        "Bad volume_driver '%(path)s' of backend '%(backend)s': %(reason)s. "
        "Use e.g. hvplug.drivers.xio.iscsi.XIOISCSIDriver."
    )


class ISEConnectionFailed(ISEError):
    msg_fmt = (
        "Cannot reach the ISE REST interface: %(reason)s (tried %(tries)s "
        "times on each of %(controllers)s). Check san_ip, san_api_port, "
        "driver_use_ssl and the network; ise_connection_retries and "
        "ise_retry_interval set the retries."
    )


class ISERequestFailed(ISEError):
    msg_fmt = "The ISE refused %(method)s %(path)s: HTTP %(status)s %(reason)s"


class ISEAuthFailed(ISERequestFailed):
    msg_fmt = (
        "The ISE refused the credentials of user '%(login)s' (HTTP 401). "
        "Check san_login and san_password."
    )


class ISETimeout(ISEError):
    msg_fmt = (
        "The ISE did not %(action)s within %(tries)s polls (%(state)s). Raise "
        "ise_completion_retries or check the array."
    )


class ISEUnsupported(ISEError):
    msg_fmt = "This ISE cannot serve hvplug: %(reason)s."


class ISEVolumeNotFound(ISEError):
    msg_fmt = "No volume '%(name)s' on the ISE."


class ISEVolumeExists(ISEError, InvalidInput):
    msg_fmt = "A volume '%(name)s' already exists on the ISE; choose another name."


class ISEConfigError(ISEError, InvalidInput):
    msg_fmt = "Backend '%(backend)s' is misconfigured: %(reason)s."


class FibreChannelNoHBA(FibreChannelError):
    msg_fmt = (
        "No Fibre Channel HBA on this host (nothing under %(fc_host_dir)s), so "
        "LUN %(lun)s of %(wwns)s cannot be reached. Load the HBA's driver "
        "(e.g. 'modprobe qla2xxx' or 'modprobe lpfc'), check that its ports "
        "are listed in %(fc_host_dir)s, and give the array this host's WWPNs."
    )


class FibreChannelDeviceNotFound(FibreChannelError):
    msg_fmt = (
        "No block device appeared for LUN %(lun)s of %(wwns)s: %(reason)s. "
        "Check the zoning between this host's WWPNs (%(wwpns)s) and those "
        "target ports, and that the array maps the LUN to them."
    )


class FibreChannelFailed(FibreChannelError):
    msg_fmt = "os-brick's Fibre Channel connector could not %(action)s: %(reason)s"


class OsBrickMissing(DependencyMissing):
    msg_fmt = (
        "Fibre Channel volumes need os-brick, which is not installed "
        "(%(reason)s). Install it: pip install 'hvplug[fc]' (or os-brick)."
    )


class RtslibMissing(DependencyMissing):
    msg_fmt = (
        "The lioadm target helper needs rtslib-fb, which is not installed "
        "(%(reason)s). Install python3-rtslib-fb, or pip install 'hvplug[lio]'."
    )


class DeviceSizeUnreadable(InitiatorError):
    msg_fmt = (
        "Cannot read the size of block device %(block)s from %(path)s: "
        "%(reason)s. Check that the device still exists (lsblk) and rescan it."
    )


class TgtdError(TargetSideError):
    """tgtd answered a request with one of its tgtadm error codes.

    ``code`` is that code (``hvplug.target.tgtd_ipc.Err`` where known);
    ``reason`` its text, as tgtadm words it.
    """

    msg_fmt = "tgtd refused %(operation)s: %(reason)s (tgtadm error %(code)s)."

    def __init__(self, operation: str, code: int, reason: str):
        self.code = code
        super().__init__(operation=operation, reason=reason, code=int(code))

    def __reduce__(self):  # picklable although __init__ differs from the base
        return type(self), (self.kwargs["operation"], self.code, self.kwargs["reason"])


class TgtdUnavailable(TargetSideError):
    msg_fmt = ("tgtd is not running or its management socket %(path)s is "
               "missing: start it ('systemctl start tgt', or 'tgtd'), or point "
               "[target] tgtd_socket at the tgtd to use")


class TgtdIPCError(TargetSideError):
    msg_fmt = "Talking to tgtd at %(path)s failed: %(reason)s"


class RollbackIncomplete(HypervisorError):
    msg_fmt = (
        "%(error)s Undoing the attach failed too, so this is left behind: "
        "%(left)s. Remove it with 'hvplug detach --domain %(domain)s --dev "
        "%(dev)s' (a disk) or 'hvplug reconcile' (a secret), after checking "
        "libvirtd's log (/var/log/libvirt/)."
    )
