"""Layer 1: flannel's network config, the lease codec, subnet allocation, lease checks, subnet.env.

Pure logic, no I/O: may import ``overlayd.base`` only.
"""
