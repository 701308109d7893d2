"""The host-gw backend: a route per peer via its PublicIP on the external interface, no device.

Part of layer 2 (``overlayd.backend``): may import ``overlayd.base``, ``overlayd.subnet`` and the
rest of ``overlayd.backend``.
"""
