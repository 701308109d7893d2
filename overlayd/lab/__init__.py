"""Layer 5: the namespace lab (hosts, bridge, its own etcd, dockerd), and traffic probes between hosts.

May import every layer below it (``base`` to ``agent`` and ``ops``); not ``bench`` nor the
command line. ``overlayd lab`` imports ``lab.namespaces``.
"""
