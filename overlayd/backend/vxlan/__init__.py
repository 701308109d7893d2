"""The VXLAN backend: the ``flannel.<VNI>`` device, its neighbour/FDB/route entries, the VTEP MAC.

Part of layer 2 (``overlayd.backend``): may import ``overlayd.base``, ``overlayd.subnet`` and the
rest of ``overlayd.backend``.
"""
