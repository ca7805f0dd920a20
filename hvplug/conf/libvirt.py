"""Options of the hypervisor side, in the ``[libvirt]`` group."""

from oslo_config import cfg

from hvplug.conf.choices import DISK_BUS_LABELS, DISK_DEVICE_LABELS

libvirt_group = cfg.OptGroup(
    "libvirt",
    title="libvirt options",
    help="How hvplug reaches libvirt and turns connection_info into disks.",
)

DEFAULT_VOLUME_DRIVERS = [
    "iscsi=hvplug.virt.volume.net.LibvirtNetVolumeDriver",
    "iser=hvplug.virt.volume.iser.LibvirtISERVolumeDriver",
    "fibre_channel=hvplug.virt.volume.fibre_channel.LibvirtFibreChannelVolumeDriver",
]

libvirt_opts = [
    cfg.StrOpt(
        "connection_uri",
        default="qemu:///system",
        help="libvirt connection URI. The global '--connect URI' option "
        "of the hvplug command overrides it.",
    ),
    cfg.ListOpt(
        "volume_drivers",
        default=DEFAULT_VOLUME_DRIVERS,
        help="Volume drivers, as 'driver_volume_type=dotted.path.Class' "
        "entries (the nova-compute convention). An entry for a type "
        "replaces the default for that type; every configured entry is "
        "validated when the registry loads (hvplug's own defaults are "
        "imported when their type is first used).",
    ),
    cfg.StrOpt(
        "iscsi_initiator_name",
        help="iSCSI initiator IQN QEMU logs in with (written as "
        "<initiator><iqn name=.../>). Default: the InitiatorName in "
        "/etc/iscsi/initiatorname.iscsi, so targets that grant this "
        "host's IQN accept the guest.",
    ),
    cfg.StrOpt(
        "iscsi_initiator_file",
        default="/etc/iscsi/initiatorname.iscsi",
        help="Where this host's iSCSI initiator name is read from when "
        "iscsi_initiator_name is not set.",
    ),
    cfg.StrOpt(
        "disk_bus",
        default="virtio",
        choices=list(DISK_BUS_LABELS.items()),
        help="Bus of attached disks when the command gives none. Hot "
        "unplug of virtio-blk needs a guest OS to acknowledge it; scsi "
        "does not.",
    ),
    cfg.StrOpt(
        "disk_device",
        default="disk",
        choices=list(DISK_DEVICE_LABELS.items()),
        help="Device of attached volumes when the command gives none "
        "(--device): 'disk', or 'lun' to pass the SCSI LUN through to the "
        "guest (QEMU's scsi-block: the guest sends SCSI commands, e.g. "
        "persistent reservations, to the target itself), which needs bus "
        "scsi.",
    ),
    cfg.StrOpt(
        "disk_cachemode",
        default="none",
        choices=["none", "writethrough", "writeback", "directsync",
                 "unsafe", "default"],
        help="QEMU cache mode of attached network disks. 'none' is the "
        "safe choice for shared storage and live migration.",
    ),
    cfg.FloatOpt(
        "iscsi_portal_probe_timeout",
        default=2.0,
        min=0.01,
        help="Seconds to wait for a TCP connection to each portal of "
        "target_portals; the first portal that accepts one is used.",
    ),
    cfg.FloatOpt(
        "iscsi_login_probe_timeout",
        default=5.0,
        min=0.0,
        help="Seconds a portal that accepted TCP has to answer one iSCSI "
        "Login Request that hvplug sends before it touches the domain (QEMU's "
        "own login has no time limit and, while it waits, holds libvirt's "
        "lock on the domain). The probe never sends a CHAP password: the "
        "target's first answer tells whether it admits, wants CHAP or does "
        "not know the target. A portal that does not answer is skipped for "
        "the next one of target_portals; with none left the attach fails. "
        "'hvplug verify' uses the same probe (and REPORT LUNS on targets "
        "without CHAP). 0 turns the probe off (TCP probe only).",
    ),
    cfg.StrOpt(
        "iscsi_iface",
        deprecated_name="iscsi_transport",
        help="open-iscsi iface that host-attached iSCSI sessions use "
        "(e.g. 'cxgb4i.00:07:43:28:b2:58' for a Chelsio offload port, "
        "'iser' for RDMA); empty means 'default' (software TCP). The old "
        "name iscsi_transport is deprecated."),
    cfg.BoolOpt(
        "iscsi_iface_fallback", default=True,
        help="When iscsi_iface cannot be used (no record, missing "
        "hardware), log one warning naming why and use 'default'; when "
        "false the attach fails with that reason."),
    cfg.BoolOpt(
        "iscsi_use_multipath", default=False,
        help="Log in to every portal of target_portals and attach the "
        "multipath device (host-attached iSCSI)."),
    cfg.BoolOpt(
        "iser_use_multipath", default=False,
        help="iscsi_use_multipath for the iSER volume driver."),
    cfg.IntOpt(
        "num_iscsi_scan_tries", default=5, min=1,
        help="How many times to rescan for a host-attached iSCSI LUN's "
        "device before giving up (waits grow between tries)."),
    cfg.IntOpt(
        "num_iser_scan_tries", default=5, min=1,
        help="num_iscsi_scan_tries for the iSER volume driver."),
    cfg.BoolOpt(
        "fc_use_multipath", default=False,
        help="Attach Fibre Channel volumes through their multipath device."),
    cfg.IntOpt(
        "num_fc_scan_tries", default=3, min=1,
        help="How many times to rescan the FC HBAs for a LUN's device before "
        "giving up."),
    cfg.FloatOpt(
        "iscsi_login_timeout", default=30.0, min=1.0,
        help="Seconds one iscsiadm discovery or login may take before it is "
        "abandoned (a stuck offload login must not hang the attach)."),
    cfg.FloatOpt(
        "domain_scan_cache_ttl", default=60.0, min=0.0,
        help="Seconds a domain's XML, read while counting a secret's users, "
        "is reused by the same process while the file libvirtd keeps for "
        "that domain (/run/libvirt/qemu/NAME.xml, /etc/libvirt/qemu/NAME.xml) "
        "is unchanged; qemu:///system only. 0 reads every domain every time."),
    cfg.IntOpt(
        "bulk_workers", default=4, min=1, max=64,
        help="Volumes one 'hvplug attach' or 'detach' with several "
        "--connection-info handles at once (threads). Changes to one domain "
        "still take turns under its lock; probes, logins and secrets overlap."),
    cfg.StrOpt(
        "volume_key_dir",
        help="Directory of LUKS passphrases for encrypted volumes "
        "(connection_info data.encrypted true): one file per volume, named "
        "by its volume id (serial, else data.volume_id), holding the "
        "passphrase's bytes exactly, mode 0600 (a file its group or others "
        "may read or write is refused). 'hvplug attach --passphrase-file' "
        "overrides it. "
        "Unset: an encrypted volume needs --passphrase-file. An absolute "
        "path.",
    ),
    cfg.FloatOpt(
        "device_detach_timeout",
        default=30.0,
        min=0.0,
        help="Seconds to wait for a detached device to leave the live "
        "domain XML before reporting a timeout.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(libvirt_group)
    conf.register_opts(libvirt_opts, group=libvirt_group)


def list_opts():
    return {libvirt_group: libvirt_opts}
