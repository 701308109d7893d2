"""Layer 2: the kernel side of a backend: the VXLAN device and its entries, rtnetlink, the link monitor.

Holds ``vxlan/`` (device, VTEP MAC), ``rtnl/`` (codec, socket), ``desired`` (entry types, the
planes and their diff), ``monitor``, ``iface`` (external interface choice) and ``flanneldproc``.
May import ``overlayd.base`` and ``overlayd.subnet``; not its siblings ``etcd`` and ``netfilter``.
"""
