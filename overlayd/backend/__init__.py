"""Layer 2: the data path behind the backend seam: the backends, rtnetlink, the link monitor.

Holds ``api`` (the seam every backend provides), ``select`` (the backends by type), ``vxlan/``
(the first backend: config section, BackendData, device, VTEP MAC, peers), ``udp/`` (flanneld's
TUN device and its forwarder process), ``rtnl/`` (codec,
socket), ``desired`` (entry types, the planes and their diff), ``monitor``, ``iface`` (external
interface choice) and ``flanneldproc``. May import ``overlayd.base`` and ``overlayd.subnet``;
not its siblings ``etcd`` and ``netfilter``.
"""
