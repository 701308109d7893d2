"""VXLAN behind the backend seam (``overlayd.backend.api.Backend``), as flanneld's vxlan backend.

Wires the parts of this folder: the section (``config``), the lease's BackendData (``lease``),
the device and its entries (``device``), the VTEP MAC (``mac``) and which leases are peers
(``peers``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from typing import ClassVar

from overlayd.backend.api import DeviceState, HostFacts, Ipv6Support, PeerActions, UnderlayIngress
from overlayd.backend.desired import entries_for
from overlayd.backend.plane import Entry, Plane, PlaneDiff
from overlayd.backend.section import section_of
from overlayd.backend.vxlan.config import TYPE, VxlanConfig, config_fields, parse_vxlan_config
from overlayd.backend.vxlan.device import DeviceSpec, DirectRoutes, VxlanBackend, device_name
from overlayd.backend.vxlan.family import union_planes
from overlayd.backend.vxlan.lease import VxlanLeaseData, vxlan_lease_attrs
from overlayd.backend.vxlan.mac import load_or_create_mac
from overlayd.backend.vxlan.peers import is_vxlan_ipv6_only_peer, is_vxlan_peer, reached_directly
from overlayd.base.headerfield import HeaderField
from overlayd.subnet.config import BackendSettings, NetworkConfig
from overlayd.subnet.lease import NO_PUBLIC_IP, Lease, LeaseAttrs, serves_ipv6

log = logging.getLogger(__name__)

# The allowlist's nftables sets are named after it (``vxlan_peers``, ``vxlan_dropped``), as
# operators know them.
INGRESS_NAME = TYPE
# The VNI in the VXLAN header: after the 8-byte UDP header, a flags byte and 3 reserved bytes.
VNI_OFFSET, VNI_BITS = 96, 24
DEVICE_PREFIX = "flannel."
DEVICE_PREFIX_V6 = "flannel-v6."
IPV6_EXTRA_OVERHEAD = 20  # an IPv6 outer header is 40 bytes, IPv4's 20


def settings(config: NetworkConfig) -> VxlanConfig:
    return section_of(config, VxlanConfig, TYPE)


def device_spec(config: NetworkConfig, host: HostFacts, subnet: IPv4Network | None, mac: str) -> DeviceSpec:
    """What ``flannel.<VNI>`` should look like on this host, holding ``subnet``'s first address."""
    section = settings(config)
    return DeviceSpec(
        vni=section.vni,
        # The interface's own address, as flanneld does: the PublicIP is what peers send to,
        # and behind NAT it is not on this host, so the kernel could not send from it.
        local_ip=host.external_ip,
        underlay_ifname=host.external_ifname,
        port=section.port,
        gbp=section.gbp,
        mtu=section.device_mtu(host.external_mtu),
        address=IPv4Interface((subnet.network_address if subnet else 0, 32)),
        mac=mac,
        learning=section.learning,
    )


def ipv6_device_spec(
    config: NetworkConfig, host: HostFacts, subnet: IPv6Network | None, mac: str
) -> DeviceSpec:
    """What ``flannel-v6.<VNI>`` should look like: the same VNI and port, sending from the
    interface's IPv6 address, holding ``subnet``'s network address as a /128 (as flanneld)."""
    spec = device_spec(config, host, None, mac)
    local = host.external_ipv6 or host.public_ipv6
    assert local is not None, "a dual-stack network on a host without IPv6 (checked at start)"
    return replace(
        spec,
        local_ip=local,
        mtu=spec.mtu - IPV6_EXTRA_OVERHEAD,
        address=IPv6Interface((subnet.network_address if subnet else 0, 128)),
    )



class Vxlan:
    """The vxlan backend; owns a raw rtnetlink socket in the current network namespace, opened
    when first needed."""

    type: ClassVar[str] = TYPE
    data_codec: ClassVar[VxlanLeaseData] = VxlanLeaseData()
    parse_config = staticmethod(parse_vxlan_config)
    device_pattern: ClassVar[str] = f"{DEVICE_PREFIX}<VNI>"
    routes_traffic: ClassVar[bool] = True
    ipv6_support: ClassVar[Ipv6Support] = Ipv6Support.IPV6_ONLY

    def __init__(self) -> None:
        self._device: VxlanBackend | None = None
        self._device6: VxlanBackend | None = None  # the IPv6 device's, in a dual-stack network
        self._mac = ""
        self._mac6 = ""
        self._ipv6_cleared = False  # no IPv6 device left behind (checked in an IPv4-only network)
        self._ipv4_cleared = False  # no IPv4 device left behind (checked in an IPv6-only network)
        # The last two planes read (IPv4, IPv6) and their union: the same object while both are.
        self._union: tuple[Plane, Plane, Plane] | None = None

    @property
    def kernel(self) -> VxlanBackend:
        if self._device is None:
            self._device = VxlanBackend()
        return self._device

    @property
    def kernel6(self) -> VxlanBackend:
        if self._device6 is None:
            self._device6 = VxlanBackend(socket.AF_INET6)
        return self._device6

    def close(self) -> None:
        for device in (self._device, self._device6):
            if device is not None:
                device.close()
        self._device = self._device6 = None

    def config_fields(self, config: BackendSettings) -> dict[str, object]:
        assert isinstance(config, VxlanConfig)
        return config_fields(config)

    def lease_data(self, config: NetworkConfig, host: HostFacts) -> LeaseAttrs:
        """Our PublicIP, VNI and VTEP MAC: a compatible existing device's MAC (flanneld's, say),
        else the one kept in the state directory."""
        section = settings(config)
        if config.ipv4 is None:  # IPv6-only: PublicIP 0.0.0.0 and no IPv4 device, as flanneld
            attrs = replace(vxlan_lease_attrs(section, NO_PUBLIC_IP, ""), vtep_mac=None)
        else:
            spec = device_spec(config, host, None, "")
            adopt = self.kernel.find_compatible_mac(spec)
            if adopt:
                log.info("adopting MAC %s of the existing compatible %s", adopt, spec.name)
            self._mac = load_or_create_mac(host.state_dir, section.vni, adopt=adopt)
            attrs = vxlan_lease_attrs(section, host.public_ip, self._mac)
        if not serves_ipv6(config) or host.public_ipv6 is None:
            return attrs
        spec6 = ipv6_device_spec(config, host, None, "")
        adopt6 = self.kernel6.find_compatible_mac(spec6)
        if adopt6:
            log.info("adopting MAC %s of the existing compatible %s", adopt6, spec6.name)
        self._mac6 = load_or_create_mac(host.state_dir, section.vni, adopt=adopt6, ipv6=True)
        return replace(attrs, public_ipv6=host.public_ipv6, vtep_mac_v6=self._mac6)

    def container_mtu(self, config: NetworkConfig, underlay_mtu: int) -> int:
        """The IPv4 device's MTU; in a dual-stack network the IPv6 device's (20 bytes less),
        so that a container's packet fits either device."""
        mtu = settings(config).device_mtu(underlay_mtu)
        return mtu - IPV6_EXTRA_OVERHEAD if serves_ipv6(config) else mtu  # IPv6-only: the IPv6 device's

    def ensure(self, config: NetworkConfig, own: Lease, host: HostFacts) -> tuple[DeviceState, list[str]]:
        """``flannel.<VNI>``, and in a dual-stack network ``flannel-v6.<VNI>`` too (removed
        when the network is IPv4-only again); in an IPv6-only network ``flannel-v6.<VNI>`` alone."""
        if config.ipv4 is None:
            return self._ensure_ipv6_only(config, own, host)
        self._ipv4_cleared = False
        mac = own.attrs.vtep_mac or self._mac
        spec = device_spec(config, host, own.subnet, mac)
        state, actions = self.kernel.ensure_device(spec)
        name6 = device_name(settings(config).vni, ipv6=True)
        if not serves_ipv6(config, own):
            # Once per IPv4-only spell, not every pass: one left by a dual-stack run goes.
            if not self._ipv6_cleared and self.kernel6.delete_device(name6):
                actions.append(f"deleted {name6} (the network is IPv4-only)")
            if self._device6 is not None:
                self._device6.close()
                self._device6 = None
            self._ipv6_cleared = True
            return state, actions
        self._ipv6_cleared = False
        state6, actions6 = self._ensure_ipv6_device(config, own, host)
        both = replace(state, ipv6_ifindex=state6.ifindex, ipv6_network=state6.ipv6_network)
        return both, actions + actions6

    def _ensure_ipv6_only(
        self, config: NetworkConfig, own: Lease, host: HostFacts
    ) -> tuple[DeviceState, list[str]]:
        """``flannel-v6.<VNI>`` as the only device, holding every entry; an IPv4 device an
        earlier run left goes (once)."""
        vni = settings(config).vni
        actions: list[str] = []
        if not self._ipv4_cleared and self.kernel.delete_device(device_name(vni)):
            actions.append(f"deleted {device_name(vni)} (the network is IPv6-only)")
        self._ipv4_cleared = True
        state6, actions6 = self._ensure_ipv6_device(config, own, host)
        return replace(state6, ipv6_ifindex=state6.ifindex), actions + actions6

    def _ensure_ipv6_device(
        self, config: NetworkConfig, own: Lease, host: HostFacts
    ) -> tuple[DeviceState, list[str]]:
        """``flannel-v6.<VNI>``; its state names the IPv6Network its direct routes lead into."""
        mac6 = own.attrs.vtep_mac_v6 or self._mac6
        state6, actions6 = self.kernel6.ensure_device(ipv6_device_spec(config, host, own.ipv6_subnet, mac6))
        return replace(state6, ipv6_network=config.ipv6.network), actions6  # type: ignore[union-attr]

    def device_names(self, config: NetworkConfig) -> tuple[str, ...]:
        vni = settings(config).vni
        if config.ipv4 is None:
            return (device_name(vni, ipv6=True),)
        return (device_name(vni), device_name(vni, ipv6=True)) if serves_ipv6(config) else (device_name(vni),)

    def owns_device(self, name: str, config: NetworkConfig | None) -> bool:
        if config is not None:
            return name in self.device_names(config)
        return name.startswith((DEVICE_PREFIX, DEVICE_PREFIX_V6))

    def wants_peer(self, lease: Lease, own: Lease, config: NetworkConfig) -> bool:
        if config.ipv4 is None:
            return is_vxlan_ipv6_only_peer(lease, own, settings(config).vni)
        return is_vxlan_peer(lease, own.subnet, settings(config).vni, own.attrs.public_ip)

    def reached_directly(self, config: NetworkConfig, host: HostFacts) -> Callable[[Lease], bool] | None:
        if not settings(config).direct_routing:
            return None
        return reached_directly(host.segments, host.ipv6_segments if serves_ipv6(config) else None)

    def peer_entries(self, lease: Lease, direct: bool = False, ipv6: bool = False) -> tuple[Entry, ...]:
        return entries_for(lease, direct, ipv6)

    def read_entries(self, device: DeviceState, network: IPv4Network | None) -> Plane:
        """The device's entries, and the direct routes on its underlay into ``network`` (also
        with DirectRouting off, so that one left from before is seen and removed)."""
        underlay = device.underlay
        if underlay is None:
            underlay = self.kernel.underlay_index(device.ifindex)
        if device.ipv6_ifindex and device.ipv6_ifindex == device.ifindex:  # IPv6-only: one device
            network6 = device.ipv6_network
            direct6 = DirectRoutes(underlay, network6) if underlay and network6 else None
            return self.kernel6.read_plane(device.ifindex, direct6)
        direct = DirectRoutes(underlay, network) if underlay and network else None
        plane = self.kernel.read_plane(device.ifindex, direct)
        if not device.ipv6_ifindex:
            return plane
        network6 = device.ipv6_network
        direct6 = DirectRoutes(underlay, network6) if underlay and network6 else None
        plane6 = self.kernel6.read_plane(device.ipv6_ifindex, direct6)
        if self._union is None or self._union[0] is not plane or self._union[1] is not plane6:
            self._union = (plane, plane6, union_planes(plane, plane6))
        return self._union[2]

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        """Each family's entries on its device, in one batch."""
        self.kernel.apply(device.ifindex, diff, device.ipv6_ifindex)

    def peer_actions(self) -> PeerActions | None:
        return None  # every peer is kernel entries

    def underlay_ingress(self, config: NetworkConfig) -> UnderlayIngress:
        section = settings(config)
        return UnderlayIngress(protocol="udp", port=section.port, name=INGRESS_NAME,
                               network_field=HeaderField(VNI_OFFSET, VNI_BITS, section.vni))

    def drift_probe(self, config: NetworkConfig) -> None:
        return None  # the device's every entry is reported by netlink

    def remove(self, config: NetworkConfig) -> list[str]:
        """The device ``flannel.<VNI>`` and the direct routes on its underlay into the Network."""
        section = settings(config)
        actions: list[str] = []
        link = self.kernel.find_device(section.device_name)
        if link is None:
            name6 = device_name(section.vni, ipv6=True)
            return [f"deleted {name6}"] if self.kernel6.delete_device(name6) else actions
        ifindex, underlay = link
        if underlay and config.ipv4 is not None:
            plane = self.kernel.read_plane(ifindex, DirectRoutes(underlay, config.network))
            if plane.direct:
                self.kernel.apply(ifindex, PlaneDiff(remove=Plane(direct=plane.direct)))
                actions.append(f"removed {len(plane.direct)} direct route(s) into {config.network}")
        if self.kernel.delete_device(section.device_name):
            actions.append(f"deleted {section.device_name}")
        if self.kernel6.delete_device(device_name(section.vni, ipv6=True)):
            actions.append(f"deleted {device_name(section.vni, ipv6=True)}")
        return actions
