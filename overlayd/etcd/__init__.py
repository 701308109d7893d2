"""Layer 2: the subnet registry: its interface, the etcd and in-memory registries, leasing, the peer watch.

May import ``overlayd.base`` and ``overlayd.subnet``; not its layer-2 siblings ``backend`` and
``netfilter``, nor anything above. Only ``registry.py`` imports ``etcd3``.
"""
