"""The udp backend: flanneld's TUN device ``flannel0`` and a user-space forwarder process.

Part of layer 2 (``overlayd.backend``): may import ``overlayd.base``, ``overlayd.subnet`` and the
rest of ``overlayd.backend``. ``forwarder`` is the process itself and imports the standard library
only, so it starts fast and stays small.
"""
