"""udp behind the backend seam (``overlayd.backend.api.Backend``), as flanneld's udp backend.

A peer's entry is where its subnet's packets go: a ``DirectRoute`` to its subnet via its PublicIP,
held in the forwarder's peer table instead of the kernel's routing table. So the seam's diffing,
rivalry rules and ingress allowlist (which opens to the PublicIPs direct routes send to) serve
udp unchanged. Wires the parts of this folder: the section (``config``), the lease (``lease``),
the forwarder process (``forwarder``, ``control``) and ``flannel0`` (``device``).
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import ClassVar

from overlayd.backend.api import ApplyError, DeviceState, HostFacts, Ipv6Support, PeerActions, UnderlayIngress
from overlayd.backend.plane import DirectRoute, Entry, Plane, PlaneDiff
from overlayd.backend.section import section_of
from overlayd.backend.udp.config import DEVICE_NAME, TYPE, UdpConfig, config_fields, parse_udp_config
from overlayd.backend.udp.control import ForwarderKeeper, ForwarderSpec, request
from overlayd.backend.udp.device import TunDevice, TunSpec
from overlayd.backend.udp.lease import UdpLeaseData, is_udp_peer, udp_lease_attrs
from overlayd.subnet.config import BackendSettings, NetworkConfig
from overlayd.subnet.lease import Lease, LeaseAttrs

# The allowlist's nftables sets: ``udp_peers``, ``udp_dropped``.
INGRESS_NAME = TYPE


def settings(config: NetworkConfig) -> UdpConfig:
    return section_of(config, UdpConfig, TYPE)


def _every_peer(lease: Lease) -> bool:
    return True


def _rows(entries: frozenset[DirectRoute]) -> list[list[object]]:
    return [[int(e.dst.network_address), e.dst.prefixlen, str(e.gateway)] for e in entries]


class Udp:
    """The udp backend; owns a raw rtnetlink socket (opened when first needed) and the forwarder
    it started, if any."""

    type: ClassVar[str] = TYPE
    data_codec: ClassVar[UdpLeaseData] = UdpLeaseData()
    parse_config = staticmethod(parse_udp_config)
    device_pattern: ClassVar[str] = DEVICE_NAME
    routes_traffic: ClassVar[bool] = True
    ipv6_support: ClassVar[Ipv6Support] = Ipv6Support.NONE  # flannel's udp carries IPv4 alone

    def __init__(self) -> None:
        self._device: TunDevice | None = None
        self.forwarder = ForwarderKeeper()
        self._table: tuple[list, Plane] | None = None  # the last table read, and its Plane

    @property
    def kernel(self) -> TunDevice:
        if self._device is None:
            self._device = TunDevice()
        return self._device

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None

    def config_fields(self, config: BackendSettings) -> dict[str, object]:
        assert isinstance(config, UdpConfig)
        return config_fields(config)

    def lease_data(self, config: NetworkConfig, host: HostFacts) -> LeaseAttrs:
        return udp_lease_attrs(host.public_ip)

    def container_mtu(self, config: NetworkConfig, underlay_mtu: int) -> int:
        return settings(config).device_mtu(underlay_mtu)

    def ensure(self, config: NetworkConfig, own: Lease, host: HostFacts) -> tuple[DeviceState, list[str]]:
        """Start (or re-attach to) the forwarder, tell it our subnet, and set up ``flannel0``."""
        actions: list[str] = []
        self.kernel.refuse_foreign(DEVICE_NAME)  # before a forwarder fails on it less clearly
        wanted = ForwarderSpec(DEVICE_NAME, host.external_ip, settings(config).port)
        hello = self.forwarder.ensure(wanted, actions)
        if (hello.get("subnet"), hello.get("network")) != (str(own.subnet), str(config.network)):
            message = {"op": "subnet", "subnet": str(own.subnet), "network": str(config.network)}
            hello = request(DEVICE_NAME, message) or hello
            actions.append(f"forwarder: own subnet {own.subnet}")
        spec = TunSpec(
            name=DEVICE_NAME,
            ifindex=int(str(hello.get("ifindex") or 0)),
            mtu=settings(config).device_mtu(host.external_mtu),
            address=IPv4Interface((own.subnet.network_address, 32)),
            network=config.network,
        )
        device, changes = self.kernel.ensure(spec)
        return device, actions + changes

    def device_names(self, config: NetworkConfig) -> tuple[str, ...]:
        return (DEVICE_NAME,)

    def owns_device(self, name: str, config: NetworkConfig | None) -> bool:
        return name == DEVICE_NAME

    def wants_peer(self, lease: Lease, own: Lease, config: NetworkConfig) -> bool:
        return is_udp_peer(lease, own)

    def reached_directly(self, config: NetworkConfig, host: HostFacts) -> Callable[[Lease], bool] | None:
        """Every peer: its entry is a route via its PublicIP, in the forwarder."""
        return _every_peer

    def peer_entries(self, lease: Lease, direct: bool = False, ipv6: bool = False) -> tuple[Entry, ...]:
        return (DirectRoute(lease.subnet, lease.attrs.public_ip),)

    def read_entries(self, device: DeviceState, network: IPv4Network | None) -> Plane:
        """The forwarder's peer table (the same Plane object while it is unchanged)."""
        reply = request(DEVICE_NAME, {"op": "table"})
        rows = sorted(reply.get("table", [])) if reply is not None else []
        if self._table is not None and self._table[0] == rows:
            return self._table[1]
        plane = Plane(direct=frozenset(
            DirectRoute(IPv4Network((network_int, prefixlen)), IPv4Address(ip))
            for network_int, prefixlen, ip in rows
        ))  # fmt: skip
        self._table = (rows, plane)
        return plane

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        message = {"op": "update", "add": _rows(diff.add.direct), "remove": _rows(diff.remove.direct)}
        if request(DEVICE_NAME, message) is None:
            count = len(diff.add.direct) + len(diff.remove.direct)
            raise ApplyError([f"{count} peer entries: the udp forwarder of {DEVICE_NAME} does not answer"])

    def peer_actions(self) -> PeerActions | None:
        return None  # every peer is kernel entries

    def drift_probe(self, config: NetworkConfig) -> None:
        return None  # netlink reports every change of its state, or it has none

    def underlay_ingress(self, config: NetworkConfig) -> UnderlayIngress:
        return UnderlayIngress(protocol="udp", port=settings(config).port, name=INGRESS_NAME)

    def remove(self, config: NetworkConfig) -> list[str]:
        """The forwarder, and with it ``flannel0``, its address and route."""
        if self.forwarder.stop(DEVICE_NAME):
            return [f"stopped the udp forwarder; {DEVICE_NAME} went with it"]
        return []
