"""``overlayd bench``: the agent's and the CNI plugin's speed, each beside a baseline from the same run.

Modules: ``stats`` (pure: percentiles, the table and the Markdown report), ``peers`` (fake peer
leases in etcd), ``kernel`` (namespaces, the netlink watcher, the ``ip -batch`` floor),
``control`` (cold start, event latency, churn, idle cost), ``cni`` (plugin start-up and ADD),
``datapath`` (iperf3), ``plot`` (matplotlib, optional) and ``run`` (the command).
"""
