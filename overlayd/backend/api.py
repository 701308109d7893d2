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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from overlayd.backend.plane import Entry, Plane, PlaneDiff, Route
from overlayd.base.headerfield import HeaderField
from overlayd.subnet.config import BackendParser, BackendSettings, NetworkConfig
from overlayd.subnet.lease import BackendDataCodec, Lease, LeaseAttrs

# (seconds between checks, the check): the check returns why a full pass is needed, or None.
DriftProbe = tuple[float, Callable[[], str | None]]


class BackendError(Exception):
    """A device could not be set up as asked; the message names the device and the cause."""


class HostUnfit(BackendError):
    """This host cannot run the backend at all (host-gw behind a NAT): waiting will not help."""


class ApplyError(BackendError):
    """Some entries of a diff failed; the others were applied."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__(f"{len(failures)} netlink operation(s) failed: " + "; ".join(failures))
        self.failures = failures


class Ipv6Support(Enum):
    """How far a backend goes with IPv6."""

    NONE = "none"  # IPv4 only: a dual-stack network's IPv6 half is leased, not carried
    DUAL_STACK = "dual-stack"  # carries a dual-stack network's IPv6 half
    IPV6_ONLY = "ipv6-only"  # also runs an IPv6-only network (EnableIPv4 false)


@dataclass(frozen=True)
class HostFacts:
    """What a backend needs to know about this host to set itself up."""

    public_ip: IPv4Address  # where peers send this host's traffic
    external_ifname: str  # the underlay interface
    # Its own address, which the backend sends from (behind NAT: not public_ip); None: it has
    # IPv6 addresses alone (an IPv6-only network).
    external_ip: IPv4Address | None
    external_mtu: int
    segments: tuple[IPv4Network, ...]  # the external interface's connected prefixes
    state_dir: Path  # for what must survive a restart (the VTEP MAC)
    # The IPv6 side of the same underlay, for a dual-stack network (None: the interface has no
    # global IPv6 address): published as PublicIPv6, and sent from (behind NAT they differ).
    public_ipv6: IPv6Address | None = None
    external_ipv6: IPv6Address | None = None
    ipv6_segments: tuple[IPv6Network, ...] = ()

    @property
    def own_ips(self) -> frozenset[IPv4Address | IPv6Address]:
        """This host's underlay addresses, which no peer's PublicIP (or PublicIPv6) may be."""
        return frozenset(ip for ip in (self.public_ip, self.external_ip, self.public_ipv6, self.external_ipv6)
                         if ip is not None and not ip.is_unspecified)  # fmt: skip


@dataclass(frozen=True)
class UnderlayIngress:
    """The underlay packets that carry overlay traffic to this host: what the ingress allowlist
    accepts only from peers' PublicIPs. ``name`` names the allowlist's nftables sets
    (``<name>_peers``, ``<name>_dropped``), which operators list by name."""

    protocol: Literal["udp"]
    port: int
    name: str
    # This network's packets among others on the same port (VXLAN's VNI); None: every packet there.
    network_field: HeaderField | None = None
    # The overlay only ever arrives through the backend's encrypted tunnel: whatever else comes
    # in on the underlay for the Network is a stranger's (or a spoofed peer's), and is dropped.
    sealed: bool = False
    # Over IPv6 the packets come to another port (WireGuard's ListenPortV6); None: to ``port``.
    ipv6_port: int | None = None


@dataclass(frozen=True)
class DeviceState:
    """The device a backend ensured, as the reconciler passes it back to the backend."""

    ifindex: int  # the device peers' entries live on
    mac: str
    mtu: int
    underlay: int | None = None  # the underlay device's index, where direct routes live
    # A dual-stack network's IPv6 device, where the IPv6 entries live (0: none); a backend
    # with one device for both families leaves it 0 and takes both there.
    ipv6_ifindex: int = 0
    # The IPv6Network whose routes off the device (host-gw's, DirectRouting's) are the backend's;
    # None: none are read.
    ipv6_network: IPv6Network | None = None


# What ``ensure`` returns for a backend without a device (alloc, extension): its entries are none.
NO_DEVICE = DeviceState(ifindex=0, mac="", mtu=0)


class PeerActions(Protocol):
    """A backend's per-peer work that is not kernel entries (extension's commands), kept
    level-triggered: each ``sync`` hands it every safe peer lease (ours left out), and it brings
    what it did in line with them in the background, never blocking the caller."""

    def sync(self, peers: Mapping[str, Lease]) -> None: ...


class Backend(Protocol):
    """One backend; an instance owns its kernel handles (``close`` releases them)."""

    type: ClassVar[str]  # BackendType, as leases and the config spell it
    data_codec: ClassVar[BackendDataCodec | None]  # its BackendData, both ways; None: kept whole
    parse_config: ClassVar[BackendParser]  # its Backend section; raises ConfigError
    device_pattern: ClassVar[str]  # its devices' names for any config, for messages: "flannel.<VNI>"
    # Whether it writes a route to every peer's subnet (what the lab waits for); alloc writes
    # none, and extension's routes are whatever its commands make.
    routes_traffic: ClassVar[bool]
    # What it does with IPv6: a config asking an IPv6-only network of one that does not run it is
    # refused; a dual-stack one that it does not carry is run with a warning, as flanneld runs it.
    ipv6_support: ClassVar[Ipv6Support]

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
        """Create or repair the device(s) for ``own``; returns them (``NO_DEVICE``: it has none)
        and the changes made."""
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

    def peer_entries(self, lease: Lease, direct: bool = False, ipv6: bool = False) -> tuple[Entry, ...]:
        """The kernel entries one peer needs (``direct``: it is on this host's segment; ``ipv6``: the
        network is dual-stack, and a backend that carries IPv6 adds the peer's IPv6 half's)."""
        ...

    def read_entries(self, device: DeviceState, network: IPv4Network | None) -> Plane:
        """The peer entries the kernel holds for this backend (routes into ``network`` off the
        device too, such as direct routes; None: the device's alone)."""
        ...

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        """Apply ``diff``; raises ApplyError naming the entries that failed."""
        ...

    def peer_actions(self) -> PeerActions | None:
        """Its per-peer work outside kernel entries, once ``ensure`` ran; None: it has none."""
        ...

    def underlay_ingress(self, config: NetworkConfig) -> UnderlayIngress | None:
        """What the ingress allowlist guards; None: nothing arrives on the underlay to guard."""
        ...

    def drift_probe(self, config: NetworkConfig) -> DriftProbe | None:
        """A check the netlink monitor runs between messages, for state no message reports;
        None: every change of the backend's state is a netlink message."""
        ...

    def remove(self, config: NetworkConfig) -> list[str]:
        """Remove what this backend left for ``config`` (another backend takes over); the changes."""
        ...

    def close(self) -> None: ...



def probe_targets(backend: Backend, peer: Lease, ipv6: bool = False) -> tuple[IPv4Address | IPv6Address, ...]:
    """The addresses of ``peer`` that answer a ping through the overlay, as containers' packets go,
    one per family the backend carries to it (``ipv6``: the network is dual-stack, or IPv6-only);
    none: nothing to probe, as for a backend that routes no traffic.

    A backend may say it with a method ``probe_targets(lease, ipv6)``; without one they are the
    first address of each subnet of the peer that the backend's entries route (its IPv4 one, and its
    IPv6 one where the backend carries that half), which the backends with a device of their own put
    on it, as the gateway of their neighbour entry (flannel's VXLAN, udp and WireGuard alike:
    flanneld's hosts as well as ours), so a mixed cluster needs nothing new."""
    if not backend.routes_traffic:
        return ()
    own_answer = getattr(backend, "probe_targets", None)
    if own_answer is not None:
        return tuple(own_answer(peer, ipv6))
    routed = {entry.dst for entry in backend.peer_entries(peer, False, ipv6) if isinstance(entry, Route)}
    return tuple(sorted((subnet.network_address for subnet in routed), key=lambda address: address.version))
