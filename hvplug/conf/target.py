"""Options of the target side, in the ``[target]`` group.

Target helpers take the group object (``CONF.target``) rather than reading
the global configuration, so the same helper can later serve a backend
section with these options.
"""

from oslo_config import cfg

from hvplug.conf.choices import TARGET_HELPERS

target_group = cfg.OptGroup(
    "target",
    title="iSCSI target options",
    help="How hvplug exports volumes (tgt, LIO, IET, chiscsi) and what "
    "connection_info it hands out.",
)

HELPERS = TARGET_HELPERS

target_opts = [
    cfg.StrOpt(
        "iscsi_helper", default="tgtadm", choices=HELPERS,
        help="Target daemon to export with. 'iscsictl' is another name for "
        "'chiscsi' (Chelsio); 'iseradm' is deprecated and means tgtadm with "
        "enable_iser."),
    cfg.StrOpt(
        "iscsi_target_prefix", default="iqn.2010-10.org.openstack:",
        help="Prefix of target IQNs; the volume name 'volume-<id>' follows."),
    cfg.StrOpt(
        "iscsi_ip_address", default="127.0.0.1",
        help="Address initiators reach the target at (the first portal)."),
    cfg.ListOpt(
        "iscsi_secondary_ip_addresses", default=[],
        help="More addresses of the same target; with any, connection_info "
        "carries the multipath keys."),
    cfg.PortOpt("iscsi_port", default=3260, help="Port of every portal."),
    cfg.BoolOpt(
        "enable_iser", default=False,
        help="Export over iSER (RDMA): tgt stanzas get 'driver iser', every "
        "LIO portal gets iSER, and driver_volume_type becomes 'iser'."),
    cfg.StrOpt(
        "iscsi_protocol", choices=["iscsi", "iser"],
        help="Cinder's name for the same switch: 'iser' equals "
        "enable_iser = true."),
    cfg.StrOpt(
        "volumes_dir", default="/var/lib/hvplug/volumes",
        help="Where per-volume target configuration (tgt stanzas, chiscsi "
        "target files) is persisted; tgtd includes it."),
    cfg.ListOpt(
        "backing_roots", default=["/var/lib/hvplug/volumes", "/dev"],
        help="Directories whose files and block devices may be exported. A "
        "backing path must resolve (every symlink followed) inside one of "
        "them and be a regular file or a block device; anything else "
        "(/etc/shadow, a symlink to it, a directory, /dev/null, a FIFO) is "
        "refused, and so are hvplug's own files (export records, stanzas, "
        "target files). The default is volumes_dir's default and /dev "
        "(LVM volumes, disks); it does not follow a changed volumes_dir."),
    cfg.StrOpt(
        "exports_dir", default="/var/lib/hvplug/exports",
        help="Where each export's record (path, IQN, tid, CHAP credentials) "
        "is kept, root-only (0600 files in a 0700 directory)."),
    cfg.BoolOpt(
        "iscsi_write_cache", default=True,
        help="Whether tgt LUNs use the write cache ('write-cache on')."),
    cfg.StrOpt(
        "iscsi_iotype", default="fileio", choices=["fileio", "blockio", "auto"],
        help="IET and chiscsi LUN type; 'auto' picks blockio for block "
        "devices and fileio for files."),
    cfg.StrOpt(
        "tgtd_socket", default="/var/run/tgtd/socket.0",
        help="tgtd's management socket (/var/run/tgtd/socket.<port> for a "
        "tgtd started with -C <port>)."),
    cfg.StrOpt(
        "iet_conf", default="/etc/iet/ietd.conf",
        help="IET's persisted configuration file."),
    cfg.StrOpt(
        "chiscsi_conf", default="/etc/chelsio-iscsi/chiscsi.conf",
        help="chiscsi's global configuration, passed with -x and never "
        "edited."),
    cfg.StrOpt(
        "lio_saveconfig", default="/etc/target/saveconfig.json",
        help="Where LIO's configuration is saved so exports survive a "
        "target-service restart."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(target_group)
    conf.register_opts(target_opts, group=target_group)


def list_opts():
    return {target_group: target_opts}
