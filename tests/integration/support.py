"""Helpers shared by the etcd integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.etcd.peerwatch import PeerEvents, PeerItem, PeerSnapshot, PeerWatchDown
from overlayd.subnet.config import NetworkConfig, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs


def host_attrs(n: int) -> LeaseAttrs:
    """The attributes host ``n`` publishes: PublicIP 192.0.2.n and a MAC derived from n."""
    mac = f"02:42:c0:00:02:{n:02x}"
    return LeaseAttrs(public_ip=IPv4Address(f"192.0.2.{n}"), backend_type="vxlan", vni=1, vtep_mac=mac)


def network_config(subnet_min: str = "198.18.1.0", subnet_max: str = "198.18.254.0") -> NetworkConfig:
    return parse_network_config(
        f'{{"Network": "198.18.0.0/16", "SubnetLen": 24, "SubnetMin": "{subnet_min}", '
        f'"SubnetMax": "{subnet_max}", "Backend": {{"Type": "vxlan", "VNI": 1}}}}', backends=CONFIG_PARSERS
    )


class PeerView:
    """What a level-triggered consumer of PeerWatcher sees: snapshots replace, events apply."""

    def __init__(self, items: queue.Queue[PeerItem]) -> None:
        self.items = items
        self.leases: dict[str, Lease] = {}
        self.snapshots = 0
        self.reasons: list[str] = []  # each snapshot's reason, in order
        self.downs: list[str] = []

    def apply(self, item: PeerItem) -> None:
        if isinstance(item, PeerSnapshot):
            self.leases = dict(item.leases)
            self.snapshots += 1
            self.reasons.append(item.reason)
        elif isinstance(item, PeerEvents):
            for event in item.events:
                if event.lease is None:
                    self.leases.pop(event.key, None)
                else:
                    self.leases[event.key] = event.lease
        elif isinstance(item, PeerWatchDown):
            self.downs.append(item.error)

    def wait_for(self, condition: Callable[[PeerView], bool], timeout: float = 10.0) -> None:
        """Apply items until ``condition(self)`` holds; fail the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"peer view did not converge: {sorted(self.leases)}, downs {self.downs}")
            try:
                self.apply(self.items.get(timeout=min(remaining, 0.5)))
            except queue.Empty:
                continue

    def public_ips(self) -> dict[str, str]:
        return {key: str(lease.attrs.public_ip) for key, lease in self.leases.items()}
