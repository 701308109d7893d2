"""host-gw behind the backend seam (``overlayd.backend.api.Backend``), as flanneld's host-gw.

No device and no encapsulation: each peer's subnet is routed via the peer's PublicIP on the
external interface, so every host must share one L2 segment (a peer elsewhere is named in a
warning with the fix and gets no route). In a dual-stack network its IPv6 subnet is routed via
its PublicIPv6 the same way (``desired.entries_for`` gives a direct peer both routes). The lease
carries ``"BackendType":"host-gw"`` and no BackendData; containers get the interface's whole MTU.
The agent's reconciler and netlink monitor keep the routes as for any backend: a deleted route is
back within the netlink debounce, not on flanneld's 10 s check.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Network
from typing import ClassVar

from overlayd.backend.api import DeviceState, HostFacts, HostUnfit, Ipv6Support, PeerActions
from overlayd.backend.desired import entries_for
from overlayd.backend.hostgw.config import TYPE, HostGwConfig, config_fields, parse_host_gw_config
from overlayd.backend.hostgw.peers import OffSegmentLog, is_host_gw_peer, on_segment
from overlayd.backend.hostgw.routes import HostRoutes
from overlayd.backend.plane import Entry, Plane, PlaneDiff
from overlayd.subnet.config import BackendSettings, NetworkConfig
from overlayd.subnet.lease import NO_PUBLIC_IP, Lease, LeaseAttrs


class HostGw:
    """The host-gw backend; owns a raw rtnetlink socket in the current network namespace, opened
    when first needed."""

    type: ClassVar[str] = TYPE
    data_codec: ClassVar[None] = None  # no BackendData: whatever a lease carries there is kept whole
    parse_config = staticmethod(parse_host_gw_config)
    device_pattern: ClassVar[str] = "(none: routes on the external interface)"
    routes_traffic: ClassVar[bool] = True
    ipv6_support: ClassVar[Ipv6Support] = Ipv6Support.IPV6_ONLY

    def probe_targets(self, lease: Lease, ipv6: bool) -> tuple[()]:
        """Not probed, in either family: a host-gw peer holds no address of its subnets until its
        first container's bridge exists, so a probe would report an idle node unreachable."""
        return ()

    def __init__(self) -> None:
        self._routes: HostRoutes | None = None
        self._routes6: HostRoutes | None = None  # a dual-stack network's IPv6 routes
        self._host: HostFacts | None = None  # the segments peers must be on, once known
        self._off_segment = OffSegmentLog()

    @property
    def kernel(self) -> HostRoutes:
        if self._routes is None:
            self._routes = HostRoutes()
        return self._routes

    @property
    def kernel6(self) -> HostRoutes:
        if self._routes6 is None:
            self._routes6 = HostRoutes(socket.AF_INET6)
        return self._routes6

    def close(self) -> None:
        for routes in (self._routes, self._routes6):
            if routes is not None:
                routes.close()
        self._routes = self._routes6 = None

    def config_fields(self, config: BackendSettings) -> dict[str, object]:
        assert isinstance(config, HostGwConfig)
        return config_fields(config)

    def lease_data(self, config: NetworkConfig, host: HostFacts) -> LeaseAttrs:
        """Our PublicIP, which must be the external interface's own address: peers route to it.
        An IPv6-only network's lease carries PublicIP 0.0.0.0 and the PublicIPv6 alone."""
        if config.ipv4 is not None and host.public_ip != host.external_ip:
            raise HostUnfit(
                f"host-gw: PublicIP {host.public_ip} is not {host.external_ifname}'s address "
                f"{host.external_ip} (a NAT, or --public-ip set to another address): peers would route "
                f"this host's subnet to an address it does not hold. Drop --public-ip, or use Backend "
                '{"Type": "vxlan"}'
            )
        self._host = host
        public_ip = host.public_ip if config.ipv4 is not None else NO_PUBLIC_IP
        attrs = LeaseAttrs(public_ip=public_ip, backend_type=TYPE)
        if config.ipv6 is None or host.public_ipv6 is None:
            return attrs
        if host.public_ipv6 != host.external_ipv6:
            raise HostUnfit(
                f"host-gw: PublicIPv6 {host.public_ipv6} is not {host.external_ifname}'s address "
                f"{host.external_ipv6}: peers would route this host's IPv6 subnet to an address it does "
                'not hold. Drop --public-ipv6, or use Backend {"Type": "vxlan"}'
            )
        return replace(attrs, public_ipv6=host.public_ipv6)

    def container_mtu(self, config: NetworkConfig, underlay_mtu: int) -> int:
        return underlay_mtu  # nothing is added to a packet

    def ensure(self, config: NetworkConfig, own: Lease, host: HostFacts) -> tuple[DeviceState, list[str]]:
        """The external interface, which the routes use; nothing is created."""
        self._host = host
        network6 = config.ipv6.network if config.ipv6 and own.ipv6_subnet else None
        link = self.kernel.interface(host.external_ifname)
        return DeviceState(link.index, link.mac, link.mtu, link.index, ipv6_network=network6), []  # type: ignore[arg-type]

    def device_names(self, config: NetworkConfig) -> tuple[str, ...]:
        return ()

    def owns_device(self, name: str, config: NetworkConfig | None) -> bool:
        return False

    def wants_peer(self, lease: Lease, own: Lease, config: NetworkConfig) -> bool:
        """Another host's host-gw lease whose PublicIP is on our segment; one off it is named."""
        if not is_host_gw_peer(lease, own.own_subnet, own.public_address):
            return False
        host = self._host
        if host is None or self._on_segment(host, config)(lease):
            return True
        segments = host.ipv6_segments if lease.public_address.version == 6 else host.segments
        self._off_segment.name(lease, segments, host.external_ifname)
        return False

    def reached_directly(self, config: NetworkConfig, host: HostFacts) -> Callable[[Lease], bool]:
        self._host = host
        return self._on_segment(host, config)

    @staticmethod
    def _on_segment(host: HostFacts, config: NetworkConfig) -> Callable[[Lease], bool]:
        return on_segment(host.segments, host.ipv6_segments if config.ipv6 is not None else None)

    def peer_entries(self, lease: Lease, direct: bool = True, ipv6: bool = False) -> tuple[Entry, ...]:
        return entries_for(lease, True, ipv6)  # a route per family, via the peer's address of each

    def read_entries(self, device: DeviceState, network: IPv4Network | None) -> Plane:
        network6 = device.ipv6_network
        if network is None and network6 is None:
            return Plane()
        plane = self.kernel.read(device.ifindex, network) if network is not None else Plane()
        if network6 is None:
            return plane
        plane6 = self.kernel6.read(device.ifindex, network6)
        return Plane(direct=plane.direct | plane6.direct) if plane6 else plane

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        self.kernel.apply(device.ifindex, diff)

    def peer_actions(self) -> PeerActions | None:
        return None  # every peer is kernel entries

    def drift_probe(self, config: NetworkConfig) -> None:
        return None  # netlink reports every change of its state, or it has none

    def underlay_ingress(self, config: NetworkConfig) -> None:
        return None  # packets arrive as they are: nothing to tell overlay traffic by

    def remove(self, config: NetworkConfig) -> list[str]:
        """The routes into the Network via a gateway, on whichever interface they are."""
        actions = []
        networks = tuple(pool.network if pool else None for pool in (config.ipv4, config.ipv6))
        for kernel, network in zip((self.kernel, self.kernel6), networks, strict=True):
            routes = kernel.read_anywhere(network) if network else None
            if routes:
                kernel.remove_all(routes)
                actions.append(f"removed {len(routes)} route(s) into {network} via peers' PublicIPs")
        return actions
