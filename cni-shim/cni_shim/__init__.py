"""A flannel-type CNI plugin that delegates to bridge + host-local (standard library only)."""
