"""Everything the agent asks of the VXLAN backend in its own terms, kept in one place: the device
spec, the VTEP MAC, the lease attributes we publish, which leases are VXLAN peers, DirectRouting.

The reconciler holds the backend's kernel calls; this module holds the VXLAN decisions, so a
second backend changes these two and not the agent's other modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from overlayd.backend.desired import is_vxlan_peer, reached_directly
from overlayd.backend.iface import ExternalInterface
from overlayd.backend.vxlan.device import DeviceSpec, DeviceState, DirectRoutes, VxlanBackend
from overlayd.backend.vxlan.mac import load_or_create_mac
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease, LeaseAttrs, lease_vni

log = logging.getLogger(__name__)


def device_name(config: NetworkConfig) -> str:
    return f"flannel.{config.backend.vni}"


def device_spec(
    config: NetworkConfig, external: ExternalInterface, subnet: IPv4Network | None, mac: str
) -> DeviceSpec:
    """What ``flannel.<VNI>`` should look like for ``subnet`` (None: before we hold one)."""
    address = IPv4Interface((subnet.network_address if subnet else 0, 32))
    return DeviceSpec(
        vni=config.backend.vni,
        # The interface's own address, as flanneld does: --public-ip is what peers send to
        # (published in the lease), and behind NAT it is not on this host, so the kernel
        # could not send from it.
        local_ip=external.ip,
        underlay_ifname=external.name,
        port=config.backend.port,
        gbp=config.backend.gbp,
        mtu=config.backend.device_mtu(external.mtu),
        address=address,
        mac=mac,
        learning=config.backend.learning,
    )


def vtep_mac(
    backend: VxlanBackend, state_dir: Path, config: NetworkConfig, external: ExternalInterface
) -> str:
    """Our VTEP MAC: a compatible existing device's (e.g. flanneld's), else the persisted one.

    Raises OSError when the state directory cannot keep it."""
    adopt = backend.find_compatible_mac(device_spec(config, external, None, ""))
    if adopt:
        log.info("adopting MAC %s of the existing compatible flannel.%d", adopt, config.backend.vni)
    return load_or_create_mac(state_dir, config.backend.vni, adopt=adopt)


def lease_attrs(config: NetworkConfig, public_ip: IPv4Address, mac: str) -> LeaseAttrs:
    """What our lease publishes: where peers send VXLAN, on which VNI, to which MAC."""
    return LeaseAttrs(public_ip=public_ip, vni=lease_vni(config.backend.vni), vtep_mac=mac)


def is_peer(lease: Lease, config: NetworkConfig, own: Lease) -> bool:
    """A lease we program: another host's VXLAN lease on our VNI."""
    return is_vxlan_peer(lease, own.subnet, config.backend.vni, own.attrs.public_ip)


def direct_test(config: NetworkConfig, segments: tuple[IPv4Network, ...]) -> Callable[[Lease], bool] | None:
    """DirectRouting's test of which peers need no VXLAN; None when it is off."""
    return reached_directly(segments) if config.backend.direct_routing else None


def direct_routes(config: NetworkConfig, device: DeviceState) -> DirectRoutes | None:
    """Where direct routes are read: on the device's underlay, into the Network. Also with
    DirectRouting off, so that one left from before (ours, or flanneld's) is removed."""
    if device.underlay is None:
        return None
    return DirectRoutes(underlay=device.underlay, network=config.network)
