"""Storage-side volume drivers (backends named in ``[DEFAULT] enabled_backends``)."""
