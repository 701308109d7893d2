"""Layer 4: the running agent: the daemon, lease and peer bookkeeping, metrics and its HTTP server, systemd.

May import layers 0-3 (``base``, ``subnet``, ``etcd``, ``backend``, ``netfilter``, ``options``);
not its sibling ``ops`` nor ``lab``, ``bench`` or the command line.
"""
