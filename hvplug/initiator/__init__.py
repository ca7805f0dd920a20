"""The host's iSCSI initiator (open-iscsi): iface records and the hardware behind them.

Light on purpose: the CLI imports it, so nothing heavy (os-brick) belongs here.
"""
