"""What the kernel holds for the backend's device, as ``overlayd status`` shows it: the device
and the peer entries on it, read without the agent (it may be stopped)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network
from socket import AF_INET, AF_INET6

from overlayd.backend.api import DeviceState
from overlayd.backend.select import BACKENDS, DEFAULT_TYPE, backend_for
from overlayd.subnet.config import NetworkConfig


@dataclass(frozen=True)
class DeviceView:
    """The backend's device and the peer entries the kernel holds for it."""

    name: str
    mtu: int
    mac: str
    routes: tuple[str, ...]  # destination subnets, e.g. "198.18.7.0/24" (IPv6 ones too)
    neighbours: int
    fdb_entries: int
    ipv6_name: str | None = None  # a dual-stack network's IPv6 device, whose entries are counted in
    tunnel_peers: int = 0  # a WireGuard device's peers


def _present_type() -> str:
    """The type of the first backend owning a device here (the config, and so the type, unknown)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = [str(link.get("IFLA_IFNAME")) for link in ipr.get_links()]
    for backend_type, backend in BACKENDS.items():
        owner = backend()
        try:
            if any(owner.owns_device(name, None) for name in names):
                return backend_type
        finally:
            owner.close()
    return DEFAULT_TYPE


def read_device(
    config: NetworkConfig | None,
    network: IPv4Network | None,
    public_ip: str | None = None,
    ipv6_only: bool = False,
) -> tuple[DeviceView | None, str | None]:
    """The backend's device for ``config`` in this namespace (the config unknown: the first
    device some backend owns, else the default backend's); for a backend without one (host-gw),
    the interface holding our lease's ``public_ip`` (an IPv6-only network's: its PublicIPv6),
    where its routes are.

    Its routes include those off the device into ``network`` (DirectRouting's, on the underlay):
    a peer reached directly is programmed too. ``ipv6_only``: subnet.env is an IPv6-only
    network's, which tells how to read the device when the config is unknown."""
    from pyroute2 import IPRoute

    backend = backend_for(config.backend.type if config is not None else _present_type())
    if config is not None and not backend.routes_traffic:
        backend.close()
        return None, f"none: the {config.backend.type} backend makes no device"
    deviceless = config is not None and not backend.device_names(config)
    try:
        with IPRoute() as ipr:
            if deviceless:
                # An IPv6 address has no IFA_LOCAL, only IFA_ADDRESS.
                v6 = ":" in (public_ip or "")
                family, attr = (AF_INET6, "IFA_ADDRESS") if v6 else (AF_INET, "IFA_LOCAL")
                held = {addr["index"] for addr in ipr.get_addr(family=family)
                        if addr.get_attr(attr) == public_ip}  # fmt: skip
                links = [link for link in ipr.get_links() if link["index"] in held]
            else:
                links = [link for link in ipr.get_links()
                         if backend.owns_device(str(link.get("IFLA_IFNAME")), config)]  # fmt: skip
        if not links:
            if deviceless:
                return None, f"no interface holds this host's PublicIP {public_ip or '(no lease found)'}"
            wanted = " or ".join(backend.device_names(config)) if config else backend.device_pattern
            return None, f"no {wanted} device in this network namespace; the agent has not set it up"
        by_name = {str(found.get("IFLA_IFNAME")): found for found in links}
        names = backend.device_names(config) if config is not None else ()
        link = by_name.get(names[0], links[0]) if names else links[0]
        # A dual-stack network's second device: its IPv6 entries are read with the first's.
        link6 = by_name.get(names[1]) if len(names) > 1 else None
        mac = str(link.get("IFLA_ADDRESS")).lower()
        mtu = int(link.get("IFLA_MTU"))
        # An IPv6-only network's one device holds IPv6 entries alone: the backend is told so as
        # its agent tells it, by the same index in both places.
        ipv6_only = (config.ipv4 is None if config is not None else ipv6_only) and not deviceless
        ipv6_ifindex = link["index"] if ipv6_only else link6["index"] if link6 else 0
        network6 = config.ipv6.network if config is not None and config.ipv6 is not None else None
        state = DeviceState(link["index"], mac, mtu, ipv6_ifindex=ipv6_ifindex, ipv6_network=network6)  # type: ignore[arg-type]
        plane = backend.read_entries(state, network)
    finally:
        backend.close()
    return DeviceView(
        name=str(link.get("IFLA_IFNAME")),
        mtu=mtu,
        mac=mac,
        routes=tuple(sorted(str(route.dst) for route in (*plane.routes, *plane.direct))),
        neighbours=len(plane.neighs),
        fdb_entries=len(plane.fdbs),
        ipv6_name=str(link6.get("IFLA_IFNAME")) if link6 else None,
        tunnel_peers=len({peer.public_key for peer in plane.peers}),
    ), None
