"""Host-attach connectors: a volume's block device on this host, os-brick's shape.

A connector knows one transport (``iscsi.ISCSIConnector`` through open-iscsi,
``fibre_channel.FibreChannelConnector`` through os-brick's FC scan) and
nothing of libvirt: it turns ``connection_info["data"]`` (``props``) into a
:class:`~hvplug.initiator.connectors.base.DeviceInfo` and back.  The
hypervisor drivers in ``hvplug.virt.volume`` put the device into a guest.
"""
