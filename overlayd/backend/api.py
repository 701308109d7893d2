"""The backend seam: what every backend provides, whatever it carries packets in.

Modelled on flannel's ``backend.Backend`` and ``backend.Network``: a backend parses its own
``Backend`` section, says what it publishes in this host's lease (``BackendType`` and
``BackendData``), ensures its device(s), turns a peer's lease into kernel entries, reads and
applies them, names the underlay traffic the ingress allowlist guards and the MTU it leaves for
containers, and removes its traces when the network switches to another backend. Everything else
(leases, the peer watch, reconciliation, the firewall, subnet.env) is the same for every backend
and lives outside ``overlayd.backend``. A backend is a folder under ``overlayd/backend/``,
registered in ``overlayd.backend.select``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from overlayd.backend.desired import Entry, Plane, PlaneDiff
from overlayd.subnet.config import BackendParser, BackendSettings, NetworkConfig
from overlayd.subnet.lease import BackendDataCodec, Lease, LeaseAttrs


class BackendError(Exception):
    """A device could not be set up as asked; the message names the device and the cause."""


class ApplyError(BackendError):
    """Some entries of a diff failed; the others were applied."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__(f"{len(failures)} netlink operation(s) failed: " + "; ".join(failures))
        self.failures = failures


@dataclass(frozen=True)
class HostFacts:
    """What a backend needs to know about this host to set itself up."""

    public_ip: IPv4Address  # where peers send this host's traffic
    external_ifname: str  # the underlay interface
    external_ip: IPv4Address  # its own address, which the backend sends from (behind NAT: not public_ip)
    external_mtu: int
    segments: tuple[IPv4Network, ...]  # the external interface's connected prefixes
    state_dir: Path  # for what must survive a restart (the VTEP MAC)


@dataclass(frozen=True)
class UnderlayIngress:
    """The underlay packets that carry overlay traffic to this host: what the ingress allowlist
    accepts only from peers' PublicIPs. ``name`` names the allowlist's nftables sets
    (``<name>_peers``, ``<name>_dropped``), which operators list by name."""

    protocol: Literal["udp"]
    port: int
    name: str


@dataclass(frozen=True)
class DeviceState:
    """The device a backend ensured, as the reconciler passes it back to the backend."""

    ifindex: int  # the device peers' entries live on
    mac: str
    mtu: int
    underlay: int | None = None  # the underlay device's index, where direct routes live


class Backend(Protocol):
    """One backend; an instance owns its kernel handles (``close`` releases them)."""

    type: ClassVar[str]  # BackendType, as leases and the config spell it
    data_codec: ClassVar[BackendDataCodec]  # its BackendData, both ways
    parse_config: ClassVar[BackendParser]  # its Backend section; raises ConfigError
    device_pattern: ClassVar[str]  # its devices' names for any config, for messages: "flannel.<VNI>"

    def config_fields(self, config: BackendSettings) -> dict[str, object]:
        """The parsed section in flannel's key spelling, defaults filled in."""
        ...

    def lease_data(self, config: NetworkConfig, host: HostFacts) -> LeaseAttrs:
        """What this host publishes in its lease (may read the kernel and the state directory)."""
        ...

    def container_mtu(self, config: NetworkConfig, underlay_mtu: int) -> int:
        """The MTU left for containers (FLANNEL_MTU)."""
        ...

    def ensure(self, config: NetworkConfig, own: Lease, host: HostFacts) -> tuple[DeviceState, list[str]]:
        """Create or repair the device(s) for ``own``; returns them and the changes made."""
        ...

    def device_names(self, config: NetworkConfig) -> tuple[str, ...]:
        """The devices the netlink monitor watches."""
        ...

    def owns_device(self, name: str, config: NetworkConfig | None) -> bool:
        """Whether ``name`` is this backend's device for ``config`` (None: for any config)."""
        ...

    def wants_peer(self, lease: Lease, own: Lease, config: NetworkConfig) -> bool:
        """Whether this host programs ``lease`` (another host's, of this backend, compatible)."""
        ...

    def reached_directly(self, config: NetworkConfig, host: HostFacts) -> Callable[[Lease], bool] | None:
        """Which peers get a route on the underlay instead of the device (DirectRouting); None:
        none do, and nothing off the device needs reading on every pass."""
        ...

    def peer_entries(self, lease: Lease, direct: bool = False) -> tuple[Entry, ...]:
        """The kernel entries one peer needs (``direct``: it is on this host's segment)."""
        ...

    def read_entries(self, device: DeviceState, network: IPv4Network | None) -> Plane:
        """The peer entries the kernel holds for this backend (routes into ``network`` off the
        device too, such as direct routes; None: the device's alone)."""
        ...

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        """Apply ``diff``; raises ApplyError naming the entries that failed."""
        ...

    def underlay_ingress(self, config: NetworkConfig) -> UnderlayIngress | None:
        """What the ingress allowlist guards; None: nothing arrives on the underlay to guard."""
        ...

    def remove(self, config: NetworkConfig) -> list[str]:
        """Remove what this backend left for ``config`` (another backend takes over); the changes."""
        ...

    def close(self) -> None: ...



def probe_target(backend: Backend, peer: Lease) -> IPv4Address | None:
    """The address of ``peer`` that answers a ping through the overlay, as containers' packets go
    (None: this backend carries no traffic to probe).

    A backend may say it with a method ``probe_target(lease)``; without one it is the first address
    of the peer's subnet, which flannel's VXLAN puts on the peer's device (flanneld's hosts as well
    as ours), so a mixed cluster needs nothing new on the peer."""
    own_answer = getattr(backend, "probe_target", None)
    if own_answer is not None:
        return own_answer(peer)
    return peer.subnet.network_address
