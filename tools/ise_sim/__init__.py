"""A simulated X-IO ISE array: the REST API over real HTTP, volumes as sparse
files, and presented volumes served over real iSCSI through tgtd.

``state`` is the array model (volumes, pools, persistence), ``hosts`` its
hosts and allocations, ``iscsi`` the tgtd target, ``responses`` the XML
answers, ``server`` the HTTP layer and fault switches, ``cli`` the command
line behind ``tools/ise-simulator``.  See ``doc/ise-simulator.md``.
"""
