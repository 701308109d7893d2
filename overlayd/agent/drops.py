"""Diagnostics a full pass adds to the log: the VXLAN sources the allowlist dropped, and a
flanneld running beside us. Neither may fail the pass."""

from __future__ import annotations

import logging
import time
from ipaddress import IPv4Address

from overlayd.agent.metrics import Metrics
from overlayd.backend.flanneldproc import flanneld_pids
from overlayd.base.outage import Outage
from overlayd.netfilter.dropnotice import DropNotice, warning
from overlayd.netfilter.firewall import Firewall, FirewallError

log = logging.getLogger(__name__)


class DropWatch:
    """Names the sources the allowlist newly dropped (one netlink dump, no process start)."""

    def __init__(self, firewall: Firewall, metrics: Metrics) -> None:
        self.firewall, self.metrics = firewall, metrics
        self.notice = DropNotice()
        self.check = Outage(log, "could not read the VXLAN sources the allowlist dropped")

    def notice_drops(self, peers: frozenset[IPv4Address], port: int) -> None:
        try:
            dropped = self.firewall.dropped_sources()
        except FirewallError as exc:  # a diagnostic: it must not fail the pass
            self.check.failed(exc)
            return
        self.check.succeeded()
        new, more = self.notice.update(dropped, peers, time.monotonic())
        self.metrics.vxlan_dropped_sources.set(len(self.notice.unexplained(dropped)))
        if new:
            log.warning("%s", warning(new, more, port))


def warn_of_flanneld() -> None:
    """Name a flanneld in our network namespace: it and we would fight over the same objects."""
    if pids := flanneld_pids():
        log.error(
            "flanneld (pid %s) runs in this network namespace: it and overlayd would both manage "
            "flannel.<VNI>, the lease and subnet.env; stop and disable it "
            "(systemctl disable --now flanneld)",
            ", ".join(map(str, pids)),
        )
