"""overlayd: a per-host agent for a VXLAN container overlay, compatible with flannel (etcd mode)."""
