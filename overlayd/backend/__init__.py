"""Network backends: each programs the kernel for one flannel backend type."""
