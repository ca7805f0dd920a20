"""The ``hvplug`` command: one module per command group."""
