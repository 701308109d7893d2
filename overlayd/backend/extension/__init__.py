"""The extension backend: flannel's four shell commands build the data path (flanneld's ``extension``).

Part of layer 2 (``overlayd.backend``): may import ``overlayd.base``, ``overlayd.subnet`` and the
rest of ``overlayd.backend``.
"""
