"""The alloc backend: a subnet lease and subnet.env, and no data path (flanneld's ``alloc``).

Part of layer 2 (``overlayd.backend``): may import ``overlayd.base``, ``overlayd.subnet`` and the
rest of ``overlayd.backend``.
"""
