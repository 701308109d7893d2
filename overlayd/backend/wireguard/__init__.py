"""The WireGuard backend: the ``flannel-wg`` device (and ``flannel-wg-v6``, a dual-stack network's
IPv6 half in Mode separate), kernel or wireguard-go, their peers and routes, the key.

Part of layer 2 (``overlayd.backend``): may import ``overlayd.base``, ``overlayd.subnet`` and the
rest of ``overlayd.backend``.
"""
