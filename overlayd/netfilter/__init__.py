"""Layer 2: the host firewall: nftables over netlink, iptables FORWARD rules, dropped-source notices.

May import ``overlayd.base`` and ``overlayd.subnet``; not its siblings ``etcd`` and ``backend``.
"""
