"""The seam's device side for backends that have no device (alloc, extension): no device, no
kernel entries, nothing on the underlay to guard, and the underlay's whole MTU for containers,
as flanneld's ``SimpleNetwork`` and extension network give."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Network
from typing import ClassVar

from overlayd.backend.api import NO_DEVICE, DeviceState, HostFacts, UnderlayIngress
from overlayd.backend.desired import Entry, Plane, PlaneDiff
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease


class NoDevice:
    """The device half of ``overlayd.backend.api.Backend`` for a backend without one."""

    device_pattern: ClassVar[str] = "(none)"

    def container_mtu(self, config: NetworkConfig, underlay_mtu: int) -> int:
        return underlay_mtu  # nothing encapsulates

    def ensure(self, config: NetworkConfig, own: Lease, host: HostFacts) -> tuple[DeviceState, list[str]]:
        return NO_DEVICE, []

    def device_names(self, config: NetworkConfig) -> tuple[str, ...]:
        return ()

    def owns_device(self, name: str, config: NetworkConfig | None) -> bool:
        return False

    def wants_peer(self, lease: Lease, own: Lease, config: NetworkConfig) -> bool:
        return False  # no kernel entries for anyone

    def reached_directly(self, config: NetworkConfig, host: HostFacts) -> Callable[[Lease], bool] | None:
        return None

    def peer_entries(self, lease: Lease, direct: bool = False) -> tuple[Entry, ...]:
        return ()

    def read_entries(self, device: DeviceState, network: IPv4Network | None) -> Plane:
        return Plane()

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        """Nothing is ever wanted, so nothing is written."""

    def underlay_ingress(self, config: NetworkConfig) -> UnderlayIngress | None:
        return None

    def remove(self, config: NetworkConfig) -> list[str]:
        return []

    def close(self) -> None:
        """No handle is held."""
