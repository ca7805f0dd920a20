"""X-IO ISE volume driver: ``client`` speaks the REST API, ``common`` maps the
volume API onto it, ``iscsi`` and ``fc`` hand out each protocol's
``connection_info``."""
