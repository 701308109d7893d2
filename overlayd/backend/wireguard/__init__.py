"""The WireGuard backend: the ``flannel-wg`` device (kernel or wireguard-go), its peers and routes, the key.

Part of layer 2 (``overlayd.backend``): may import ``overlayd.base``, ``overlayd.subnet`` and the
rest of ``overlayd.backend``.
"""
