"""VXLAN behind the backend seam (``overlayd.backend.api.Backend``), as flanneld's vxlan backend.

Wires the parts of this folder: the section (``config``), the lease's BackendData (``lease``),
the device and its entries (``device``), the VTEP MAC (``mac``) and which leases are peers
(``peers``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Interface, IPv4Network
from typing import ClassVar

from overlayd.backend.api import DeviceState, HostFacts, PeerActions, UnderlayIngress
from overlayd.backend.desired import Entry, Plane, PlaneDiff, entries_for
from overlayd.backend.vxlan.config import TYPE, VxlanConfig, config_fields, parse_vxlan_config
from overlayd.backend.vxlan.device import DeviceSpec, DirectRoutes, VxlanBackend
from overlayd.backend.vxlan.lease import VxlanLeaseData, vxlan_lease_attrs
from overlayd.backend.vxlan.mac import load_or_create_mac
from overlayd.backend.vxlan.peers import is_vxlan_peer, reached_directly
from overlayd.base.headerfield import HeaderField
from overlayd.subnet.config import BackendSettings, NetworkConfig
from overlayd.subnet.lease import Lease, LeaseAttrs

log = logging.getLogger(__name__)

# The allowlist's nftables sets are named after it (``vxlan_peers``, ``vxlan_dropped``), as
# operators know them.
INGRESS_NAME = TYPE
# The VNI in the VXLAN header: after the 8-byte UDP header, a flags byte and 3 reserved bytes.
VNI_OFFSET, VNI_BITS = 96, 24
DEVICE_PREFIX = "flannel."


def settings(config: NetworkConfig) -> VxlanConfig:
    """``config``'s Backend section, which must be a vxlan one."""
    backend = config.backend
    if not isinstance(backend, VxlanConfig):
        raise TypeError(f"a {backend.type} network config was handed to the {TYPE} backend")
    return backend


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


class Vxlan:
    """The vxlan backend; owns a raw rtnetlink socket in the current network namespace, opened
    when first needed."""

    type: ClassVar[str] = TYPE
    data_codec: ClassVar[VxlanLeaseData] = VxlanLeaseData()
    parse_config = staticmethod(parse_vxlan_config)
    device_pattern: ClassVar[str] = f"{DEVICE_PREFIX}<VNI>"
    routes_traffic: ClassVar[bool] = True

    def __init__(self) -> None:
        self._device: VxlanBackend | None = None
        self._mac = ""

    @property
    def kernel(self) -> VxlanBackend:
        if self._device is None:
            self._device = VxlanBackend()
        return self._device

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None

    def config_fields(self, config: BackendSettings) -> dict[str, object]:
        assert isinstance(config, VxlanConfig)
        return config_fields(config)

    def lease_data(self, config: NetworkConfig, host: HostFacts) -> LeaseAttrs:
        """Our PublicIP, VNI and VTEP MAC: a compatible existing device's MAC (flanneld's, say),
        else the one kept in the state directory."""
        section = settings(config)
        spec = device_spec(config, host, None, "")
        adopt = self.kernel.find_compatible_mac(spec)
        if adopt:
            log.info("adopting MAC %s of the existing compatible %s", adopt, spec.name)
        self._mac = load_or_create_mac(host.state_dir, section.vni, adopt=adopt)
        return vxlan_lease_attrs(section, host.public_ip, self._mac)

    def container_mtu(self, config: NetworkConfig, underlay_mtu: int) -> int:
        return settings(config).device_mtu(underlay_mtu)

    def ensure(self, config: NetworkConfig, own: Lease, host: HostFacts) -> tuple[DeviceState, list[str]]:
        mac = own.attrs.vtep_mac or self._mac
        spec = device_spec(config, host, own.subnet, mac)
        return self.kernel.ensure_device(spec)

    def device_names(self, config: NetworkConfig) -> tuple[str, ...]:
        return (settings(config).device_name,)

    def owns_device(self, name: str, config: NetworkConfig | None) -> bool:
        if config is not None:
            return name in self.device_names(config)
        return name.startswith(DEVICE_PREFIX)

    def wants_peer(self, lease: Lease, own: Lease, config: NetworkConfig) -> bool:
        return is_vxlan_peer(lease, own.subnet, settings(config).vni, own.attrs.public_ip)

    def reached_directly(self, config: NetworkConfig, host: HostFacts) -> Callable[[Lease], bool] | None:
        return reached_directly(host.segments) if settings(config).direct_routing else None

    def peer_entries(self, lease: Lease, direct: bool = False) -> tuple[Entry, ...]:
        return entries_for(lease, direct)

    def read_entries(self, device: DeviceState, network: IPv4Network | None) -> Plane:
        """The device's entries, and the direct routes on its underlay into ``network`` (also
        with DirectRouting off, so that one left from before is seen and removed)."""
        underlay = device.underlay
        if underlay is None:
            underlay = self.kernel.underlay_index(device.ifindex)
        direct = DirectRoutes(underlay, network) if underlay and network else None
        return self.kernel.read_plane(device.ifindex, direct)

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        self.kernel.apply(device.ifindex, diff)

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
            return actions
        ifindex, underlay = link
        if underlay:
            plane = self.kernel.read_plane(ifindex, DirectRoutes(underlay, config.network))
            if plane.direct:
                self.kernel.apply(ifindex, PlaneDiff(remove=Plane(direct=plane.direct)))
                actions.append(f"removed {len(plane.direct)} direct route(s) into {config.network}")
        if self.kernel.delete_device(section.device_name):
            actions.append(f"deleted {section.device_name}")
        return actions
