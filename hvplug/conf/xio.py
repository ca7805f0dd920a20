"""Options of the X-IO ISE volume driver.

They are read from each backend's own section (``[ise1]`` for
``enabled_backends = ise1``); a value missing there falls back to
``[backend_defaults]`` (see ``hvplug.conf.backends``).  The groups listed
here document them and hold those defaults.
"""

from oslo_config import cfg

backend_defaults_group = cfg.OptGroup(
    "backend_defaults",
    title="Defaults of every volume backend",
    help="Defaults for every backend section named in [DEFAULT] "
    "enabled_backends; an option set in the backend's own section wins.",
)

xio_opts = [
    cfg.HostAddressOpt(
        "san_ip", help="Management address of the ISE (its REST interface)."),
    cfg.StrOpt("san_login", default="admin",
               help="User name of the ISE REST interface."),
    cfg.StrOpt("san_password", default="", secret=True,
               help="Password of san_login; never logged or printed."),
    cfg.PortOpt("san_api_port",
                help="Port of the REST interface; default 80, or 443 with "
                "driver_use_ssl (set it to reach a simulator on another port)."),
    cfg.BoolOpt("driver_use_ssl", default=False,
                help="Speak HTTPS to the REST interface."),
    cfg.BoolOpt("driver_ssl_cert_verify", default=True,
                help="Verify the ISE's HTTPS certificate (turn off only for a "
                "test array with a self-signed certificate)."),
    cfg.StrOpt("driver_ssl_cert_path",
               help="CA bundle to verify the ISE's certificate with; default: "
               "the system's."),
    cfg.StrOpt("ise_raid_level", deprecated_name="ise_raid", default="1",
               choices=["0", "1", "5"],
               help="RAID level (redundancy) of created volumes. Cinder's "
               "later name ise_raid is accepted."),
    cfg.StrOpt("ise_default_pool", deprecated_name="ise_storage_pool",
               help="Pool new volumes are created in (its name or id); empty "
               "lets the array choose. Cinder's later name ise_storage_pool "
               "is accepted."),
    cfg.StrOpt("iscsi_ip_address",
               help="Address of one iSCSI port of the ISE: connection_info "
               "names it as the portal, and a sendtargets discovery there "
               "returns every portal on its subnet."),
    cfg.IntOpt("ise_connection_retries", default=5, min=1,
               help="Attempts per controller when the REST interface cannot "
               "be reached (primary first, then secondary)."),
    cfg.FloatOpt("ise_retry_interval", default=1.0, min=0.0,
                 help="Seconds between those attempts, and between polls."),
    cfg.IntOpt("ise_completion_retries", default=30, min=1,
               help="Polls of an asynchronous operation (create, snapshot, "
               "clone, delete) and retries of 'Not in a valid state' before "
               "giving up."),
    cfg.FloatOpt("ise_request_timeout", default=30.0, min=0.1,
                 help="Seconds one REST request may take before it counts "
                 "as a connection failure."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(backend_defaults_group)
    conf.register_opts(xio_opts, group=backend_defaults_group)


def list_opts():
    return {backend_defaults_group: xio_opts}
