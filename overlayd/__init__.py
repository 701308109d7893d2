"""overlayd: a per-host agent for a VXLAN container overlay, compatible with flannel (etcd mode)."""

# The one place the version is written (pyproject reads it): importlib.metadata would cost the
# agent ~13 ms of imports at every start.
__version__ = "0.1.0"
