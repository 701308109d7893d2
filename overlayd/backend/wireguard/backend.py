"""WireGuard behind the backend seam (``overlayd.backend.api.Backend``), as flanneld's wireguard
backend: one device ``flannel-wg``, one WireGuard peer per host with its PublicIP and the network's
ListenPort as endpoint and its subnet as allowed IPs.

Wires the parts of this folder: the section (``config``), the key pair (``keys``), the lease's
BackendData (``lease``), the device and its entries (``device``) and the ``wg`` tool (``wgtool``).
The netlink monitor sees the device and its routes but not its peers: ``drift_probe`` reads
them, cheaply, between passes, and every full pass reads them (``reached_directly`` says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path
from typing import ClassVar

from overlayd.backend.api import DeviceState, HostFacts, Ipv6Support, PeerActions, UnderlayIngress
from overlayd.backend.plane import Entry, Plane, PlaneDiff, Route, WgPeer
from overlayd.backend.section import section_of
from overlayd.backend.wireguard import wgtool
from overlayd.backend.wireguard.config import (
    DEVICE_NAME,
    TYPE,
    WireguardConfig,
    config_fields,
    parse_wireguard_config,
)
from overlayd.backend.wireguard.device import WgDeviceSpec, WgKernel
from overlayd.backend.wireguard.keys import KeyPair, key_file, load_or_create_key
from overlayd.backend.wireguard.lease import WireguardLeaseData, public_key_of, wireguard_lease_attrs
from overlayd.backend.wireguard.wgtool import PeerSettings
from overlayd.base.atomicfile import write_atomic
from overlayd.subnet.config import BackendSettings, NetworkConfig
from overlayd.subnet.lease import Lease, LeaseAttrs

log = logging.getLogger(__name__)

INGRESS_NAME = TYPE  # the allowlist's nftables sets: wireguard_peers, wireguard_dropped
PSK_FILE = "wireguard-psk"
WIREGUARD_GO_LOG = "wireguard-go.log"
PROBE_INTERVAL = 0.5  # seconds between reads of the device's peers by the drift probe


def settings(config: NetworkConfig) -> WireguardConfig:
    return section_of(config, WireguardConfig, TYPE)


def wireguard_entries(lease: Lease, direct: bool = False, ipv6: bool = False) -> tuple[Entry, ...]:
    """A peer's WireGuard peer and the route to its subnet through the device (IPv4 only: a
    dual-stack network's IPv6 half is leased but not carried)."""
    key = public_key_of(lease.attrs) or ""
    subnet = lease.subnet
    return WgPeer(key, lease.attrs.public_ip, subnet), Route(subnet, subnet.network_address)


class Wireguard:
    """The wireguard backend; owns a raw rtnetlink socket, opened when first needed."""

    type: ClassVar[str] = TYPE
    data_codec: ClassVar[WireguardLeaseData] = WireguardLeaseData()
    parse_config = staticmethod(parse_wireguard_config)
    device_pattern: ClassVar[str] = DEVICE_NAME
    routes_traffic: ClassVar[bool] = True
    ipv6_support: ClassVar[Ipv6Support] = Ipv6Support.NONE

    def __init__(self) -> None:
        self._kernel: WgKernel | None = None
        self._keys: KeyPair | None = None
        self._peer_settings = PeerSettings(0, None, 0)

    @property
    def kernel(self) -> WgKernel:
        if self._kernel is None:
            self._kernel = WgKernel()
        return self._kernel

    def close(self) -> None:
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None

    def config_fields(self, config: BackendSettings) -> dict[str, object]:
        assert isinstance(config, WireguardConfig)
        return config_fields(config)

    def lease_data(self, config: NetworkConfig, host: HostFacts) -> LeaseAttrs:
        """Our PublicIP and public key, from the private key kept across restarts."""
        settings(config)
        self._keys = load_or_create_key(key_file(host.state_dir))
        log.info("WireGuard public key %s (private key in %s)", self._keys.public_key,
                 self._keys.private_key_file)
        return wireguard_lease_attrs(host.public_ip, self._keys.public_key)

    def container_mtu(self, config: NetworkConfig, underlay_mtu: int) -> int:
        return settings(config).device_mtu(underlay_mtu)

    def ensure(self, config: NetworkConfig, own: Lease, host: HostFacts) -> tuple[DeviceState, list[str]]:
        section = settings(config)
        keys = self._keys or load_or_create_key(key_file(host.state_dir))
        self._keys = keys
        self._peer_settings = PeerSettings(section.listen_port, self._psk_file(section, host.state_dir),
                                           section.keepalive, section.psk)
        spec = WgDeviceSpec(
            name=DEVICE_NAME,
            mtu=section.device_mtu(host.external_mtu),
            address=own.subnet.network_address,
            network=config.network,
            private_key_file=keys.private_key_file,
            public_key=keys.public_key,
            listen_port=section.listen_port,
            log_file=host.state_dir / WIREGUARD_GO_LOG,
        )
        return self.kernel.ensure(spec)

    @staticmethod
    def _psk_file(section: WireguardConfig, state_dir: Path) -> Path | None:
        """The PSK in a 0600 file for ``wg``, which takes secrets only as files."""
        if not section.psk:
            return None
        path = state_dir / PSK_FILE
        write_atomic(path, section.psk + "\n", mode=0o600)
        return path

    def device_names(self, config: NetworkConfig) -> tuple[str, ...]:
        return (DEVICE_NAME,)

    def owns_device(self, name: str, config: NetworkConfig | None) -> bool:
        return name == DEVICE_NAME

    def wants_peer(self, lease: Lease, own: Lease, config: NetworkConfig) -> bool:
        return (
            lease.subnet != own.subnet
            and lease.attrs.public_ip != own.attrs.public_ip
            and lease.attrs.backend_type == TYPE
            and public_key_of(lease.attrs) is not None
        )

    def reached_directly(self, config: NetworkConfig, host: HostFacts) -> Callable[[Lease], bool] | None:
        """No peer is reached without the tunnel; not None all the same, because the device's
        peers, which no netlink message reports, must be read on every pass."""
        return _never

    def peer_entries(self, lease: Lease, direct: bool = False, ipv6: bool = False) -> tuple[Entry, ...]:
        return wireguard_entries(lease)

    def read_entries(self, device: DeviceState, network: IPv4Network | None) -> Plane:
        return self.kernel.read_plane(DEVICE_NAME, device.ifindex, self._peer_settings)

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        self.kernel.apply(DEVICE_NAME, device.ifindex, diff, self._peer_settings)

    def peer_actions(self) -> PeerActions | None:
        return None  # every peer is a WireGuard peer and a route

    def underlay_ingress(self, config: NetworkConfig) -> UnderlayIngress:
        port = settings(config).listen_port
        return UnderlayIngress(protocol="udp", port=port, name=INGRESS_NAME, sealed=True)

    def drift_probe(self, config: NetworkConfig) -> tuple[float, Callable[[], str | None]] | None:
        """Every ``PROBE_INTERVAL``: whether the device's keys, port or peers changed since the
        last full pass read them (a peer removed by hand, a restarted wireguard-go)."""
        return PROBE_INTERVAL, self._probe

    def _probe(self) -> str | None:
        kernel = self._kernel
        if kernel is None or not kernel.fingerprint:
            return None
        try:
            dump = wgtool.show(DEVICE_NAME, self._peer_settings)
        except Exception as err:  # the device is gone: the netlink monitor reports that
            log.debug("drift probe: %s", err)
            return None
        return "WireGuard peers changed" if dump.fingerprint != kernel.fingerprint else None

    def remove(self, config: NetworkConfig) -> list[str]:
        """The device ``flannel-wg`` (its peers and routes go with it)."""
        return [f"deleted {DEVICE_NAME}"] if self.kernel.delete(DEVICE_NAME) else []


def _never(lease: Lease) -> bool:
    return False
