"""Layer 4: the operator's commands: status, network config, docker-opts, install-cni, the CNI tool.

May import layers 0-3 (``base``, ``subnet``, ``etcd``, ``backend``, ``netfilter``, ``options``);
not its sibling ``agent`` nor ``lab``, ``bench`` or the command line.
"""
