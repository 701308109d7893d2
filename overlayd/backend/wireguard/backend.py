"""WireGuard behind the backend seam (``overlayd.backend.api.Backend``), as flanneld's wireguard
backend: a device ``flannel-wg``, one WireGuard peer per host with its PublicIP and the network's
ListenPort as endpoint and its subnet as allowed IPs; in a dual-stack network the IPv6 half too,
laid out as the Mode says (``peers``): by default on a second device ``flannel-wg-v6`` listening
on ListenPortV6, with the same key. In an IPv6-only network the IPv6 half alone: on
``flannel-wg-v6`` alone in Mode separate, on ``flannel-wg`` in Modes ipv6 and auto.

Wires the parts of this folder: the section (``config``), the key pair (``keys``), the lease's
BackendData and BackendV6Data (``lease``), the peers' entries per Mode (``peers``), the devices
(``device``) and the ``wg`` tool (``wgtool``). The netlink monitor sees the devices and their
routes but not their peers: ``drift_probe`` reads them, cheaply, between passes, and every full
pass reads them (``reached_directly`` says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Address
from pathlib import Path
from typing import ClassVar

from overlayd.backend.api import (
    ApplyError,
    BackendError,
    DeviceState,
    HostFacts,
    HostUnfit,
    Ipv6Support,
    PeerActions,
    UnderlayIngress,
)
from overlayd.backend.plane import Entry, Plane, PlaneDiff
from overlayd.backend.section import section_of
from overlayd.backend.wireguard import wgtool
from overlayd.backend.wireguard.config import (
    DEVICE_NAME,
    DEVICE_NAME_V6,
    TYPE,
    Mode,
    WireguardConfig,
    config_fields,
    parse_wireguard_config,
)
from overlayd.backend.wireguard.device import WgDeviceSpec, WgKernel
from overlayd.backend.wireguard.keys import KeyPair, key_file, load_or_create_key
from overlayd.backend.wireguard.lease import (
    WireguardLeaseData,
    wireguard_ipv6_only_attrs,
    wireguard_lease_attrs,
)
from overlayd.backend.wireguard.peers import (
    is_wireguard_ipv6_only_peer,
    is_wireguard_peer,
    split_diff,
    union,
    wireguard_entries,
)
from overlayd.backend.wireguard.wgtool import PeerSettings
from overlayd.base.atomicfile import write_atomic
from overlayd.subnet.config import BackendSettings, NetworkConfig
from overlayd.subnet.lease import Lease, LeaseAttrs, serves_ipv6

log = logging.getLogger(__name__)

INGRESS_NAME = TYPE  # the allowlist's nftables sets: wireguard_peers, wireguard_dropped
PSK_FILE = "wireguard-psk"
WIREGUARD_GO_LOG = "wireguard-go.log"
PROBE_INTERVAL = 0.5  # seconds between reads of the device's peers by the drift probe


def settings(config: NetworkConfig) -> WireguardConfig:
    return section_of(config, WireguardConfig, TYPE)



def refuse_mode(config: NetworkConfig, error: type[BackendError] = BackendError) -> WireguardConfig:
    """The section, if its Mode can serve the network; ``error`` naming the fix else."""
    section = settings(config)
    problem = section.mode_problem(serves_ipv6(config)) or section.network_problem(
        config.ipv4 is not None, config.ipv6 is not None)
    if problem is not None:
        raise error(f"network config: {problem}")
    return section


def ipv6_only_device(section: WireguardConfig) -> tuple[str, int]:
    """The one device of an IPv6-only network and its listen port, as flanneld lays it out:
    ``flannel-wg-v6`` on ListenPortV6 in Mode separate, else ``flannel-wg`` on ListenPort."""
    if section.mode is Mode.SEPARATE:
        return DEVICE_NAME_V6, section.listen_port_v6
    return DEVICE_NAME, section.listen_port


class Wireguard:
    """The wireguard backend; owns a raw rtnetlink socket, opened when first needed."""

    type: ClassVar[str] = TYPE
    data_codec: ClassVar[WireguardLeaseData] = WireguardLeaseData()
    parse_config = staticmethod(parse_wireguard_config)
    device_pattern: ClassVar[str] = DEVICE_NAME
    routes_traffic: ClassVar[bool] = True
    ipv6_support: ClassVar[Ipv6Support] = Ipv6Support.IPV6_ONLY

    def __init__(self) -> None:
        self._kernel: WgKernel | None = None
        self._keys: KeyPair | None = None
        self._peer_settings = PeerSettings(0, None, 0)
        self._peer_settings6 = PeerSettings(0, None, 0, family=6)  # flannel-wg-v6's peers'
        # What the peers' entries depend on besides their leases: the Mode (a change restarts the
        # agent) and, for Mode auto, our own IPv6 address.
        self._mode = Mode.SEPARATE
        self._own_ipv6: IPv6Address | None = None
        # The devices found absent or deleted since last ensured: one this network and Mode have
        # no use for, left by an earlier run, is deleted once per spell without it, not every pass.
        self._cleared: set[str] = set()
        self._single: str | None = None  # an IPv6-only network's one device, once ensured
        self._read = (Plane(), Plane())  # what the two devices held when last read

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
        """Our PublicIP and public key, from the private key kept across restarts; in a
        dual-stack network our PublicIPv6 and the same key as BackendV6Data, as flanneld."""
        self._mode = refuse_mode(config, HostUnfit).mode
        self._own_ipv6 = host.external_ipv6
        self._keys = load_or_create_key(key_file(host.state_dir))
        log.info("WireGuard public key %s (private key in %s)", self._keys.public_key,
                 self._keys.private_key_file)
        if config.ipv4 is None:
            if host.public_ipv6 is None:
                raise HostUnfit(f"wireguard: the network is IPv6-only but {host.external_ifname} has no "
                                "global IPv6 address to publish; add one, or give --public-ipv6")
            return wireguard_ipv6_only_attrs(host.public_ipv6, self._keys.public_key)
        ipv6 = host.public_ipv6 if serves_ipv6(config) else None
        return wireguard_lease_attrs(host.public_ip, self._keys.public_key, ipv6)

    def container_mtu(self, config: NetworkConfig, underlay_mtu: int) -> int:
        return settings(config).device_mtu(underlay_mtu)

    def ensure(self, config: NetworkConfig, own: Lease, host: HostFacts) -> tuple[DeviceState, list[str]]:
        """``flannel-wg``; in a dual-stack network in Mode separate ``flannel-wg-v6`` too (removed
        when the network is IPv4-only again), in the other Modes the IPv6 half on ``flannel-wg``."""
        section = refuse_mode(config)
        self._mode, self._own_ipv6 = section.mode, host.external_ipv6
        keys = self._keys or load_or_create_key(key_file(host.state_dir))
        self._keys = keys
        psk_file = self._psk_file(section, host.state_dir)
        self._peer_settings = PeerSettings(section.listen_port, psk_file, section.keepalive, section.psk)
        self._peer_settings6 = replace(self._peer_settings, port=section.listen_port_v6, family=6)
        spec = WgDeviceSpec(
            name=DEVICE_NAME,
            mtu=section.device_mtu(host.external_mtu),
            addresses=(),
            networks=(),
            private_key_file=keys.private_key_file,
            public_key=keys.public_key,
            listen_port=section.listen_port,
            log_file=host.state_dir / WIREGUARD_GO_LOG,
        )
        if config.ipv4 is None:
            return self._ensure_ipv6_only(config, section, own, spec)
        self._single = None
        spec = replace(spec, addresses=(own.subnet.network_address,), networks=(config.network,))
        ipv6 = serves_ipv6(config, own)
        half6 = (own.ipv6_subnet.network_address, config.ipv6.network) if ipv6 else None  # type: ignore[union-attr]
        if half6 is not None and not section.separate_ipv6(ipv6):
            spec = replace(spec, addresses=(*spec.addresses, half6[0]), networks=(*spec.networks, half6[1]))
        state, actions = self.kernel.ensure(spec)
        self._cleared.discard(DEVICE_NAME)
        if half6 is None or not section.separate_ipv6(ipv6):
            self._clear(DEVICE_NAME_V6, "no IPv6 device in this network and Mode", actions)
            return state, actions
        self._cleared.discard(DEVICE_NAME_V6)
        spec6 = replace(spec, name=DEVICE_NAME_V6, addresses=(half6[0],), networks=(half6[1],),
                        listen_port=section.listen_port_v6)  # fmt: skip
        state6, actions6 = self.kernel.ensure(spec6)
        return replace(state, ipv6_ifindex=state6.ifindex), actions + actions6

    def _ensure_ipv6_only(
        self, config: NetworkConfig, section: WireguardConfig, own: Lease, spec: WgDeviceSpec
    ) -> tuple[DeviceState, list[str]]:
        """The one device of an IPv6-only network (``ipv6_only_device``) with the IPv6 subnet's
        first address, routing the IPv6Network; the other, if an earlier run left it, goes."""
        assert config.ipv6 is not None and own.ipv6_subnet is not None, "an IPv6-only lease"
        name, port = ipv6_only_device(section)
        self._single = name
        if name == DEVICE_NAME:  # its peers are reached over IPv6 too
            self._peer_settings = replace(self._peer_settings, family=6)
        actions: list[str] = []
        other = DEVICE_NAME if name == DEVICE_NAME_V6 else DEVICE_NAME_V6
        self._clear(other, f"the network is IPv6-only: Mode {section.mode.value} uses {name}", actions)
        self._cleared.discard(name)
        spec = replace(spec, name=name, addresses=(own.ipv6_subnet.network_address,),
                       networks=(config.ipv6.network,), listen_port=port)  # fmt: skip
        state, more = self.kernel.ensure(spec)
        # One device holding IPv6 entries alone: its index in both places, as the agent expects.
        return replace(state, ipv6_ifindex=state.ifindex), actions + more

    def _clear(self, name: str, why: str, actions: list[str]) -> None:
        """Delete ``name`` once per spell without it (an earlier run's or Mode's), not every pass."""
        if name not in self._cleared and self.kernel.delete(name):
            actions.append(f"deleted {name} ({why})")
            log.info("%s", actions[-1])
        self._cleared.add(name)

    @staticmethod
    def _psk_file(section: WireguardConfig, state_dir: Path) -> Path | None:
        """The PSK in a 0600 file for ``wg``, which takes secrets only as files."""
        if not section.psk:
            return None
        path = state_dir / PSK_FILE
        write_atomic(path, section.psk + "\n", mode=0o600)
        return path

    def device_names(self, config: NetworkConfig) -> tuple[str, ...]:
        if config.ipv4 is None:
            return (ipv6_only_device(settings(config))[0],)
        if settings(config).separate_ipv6(serves_ipv6(config)):
            return DEVICE_NAME, DEVICE_NAME_V6
        return (DEVICE_NAME,)

    def owns_device(self, name: str, config: NetworkConfig | None) -> bool:
        if config is not None:
            return name in self.device_names(config)
        return name in (DEVICE_NAME, DEVICE_NAME_V6)

    def wants_peer(self, lease: Lease, own: Lease, config: NetworkConfig) -> bool:
        if config.ipv4 is None:
            return is_wireguard_ipv6_only_peer(lease, own)
        return is_wireguard_peer(lease, own, settings(config).mode)

    def reached_directly(self, config: NetworkConfig, host: HostFacts) -> Callable[[Lease], bool] | None:
        """No peer is reached without the tunnel; not None all the same, because the device's
        peers, which no netlink message reports, must be read on every pass."""
        return _never

    def peer_entries(self, lease: Lease, direct: bool = False, ipv6: bool = False) -> tuple[Entry, ...]:
        return wireguard_entries(lease, direct, ipv6, self._mode, self._own_ipv6)

    def read_entries(self, device: DeviceState, network: IPv4Network | None) -> Plane:
        """Both devices' routes and peers, as one Plane; an IPv6-only network's one device's."""
        if device.ipv6_ifindex and device.ipv6_ifindex == device.ifindex:
            name, peer_settings = self._ipv6_only_device(device.ifindex)
            self._read = (Plane(), Plane())
            return self.kernel.read_plane(name, device.ifindex, peer_settings)
        plane = self.kernel.read_plane(DEVICE_NAME, device.ifindex, self._peer_settings)
        plane6 = Plane()
        if device.ipv6_ifindex:
            plane6 = self.kernel.read_plane(DEVICE_NAME_V6, device.ipv6_ifindex, self._peer_settings6)
        self._read = (plane, plane6)
        return union(plane, plane6)

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        """Each device's part of ``diff`` (``peers.split_diff``); ApplyError naming the failures."""
        if device.ipv6_ifindex and device.ipv6_ifindex == device.ifindex:  # IPv6-only: one device
            name, peer_settings = self._ipv6_only_device(device.ifindex)
            self.kernel.apply(name, device.ifindex, diff, peer_settings)
            return
        if not device.ipv6_ifindex:
            self.kernel.apply(DEVICE_NAME, device.ifindex, diff, self._peer_settings)
            return
        diff4, diff6 = split_diff(diff, self._read)
        failures: list[str] = []
        for name, ifindex, part, peer_settings in (
            (DEVICE_NAME, device.ifindex, diff4, self._peer_settings),
            (DEVICE_NAME_V6, device.ipv6_ifindex, diff6, self._peer_settings6),
        ):
            try:
                if not part.empty:
                    self.kernel.apply(name, ifindex, part, peer_settings)
            except ApplyError as err:
                failures += err.failures
        if failures:
            raise ApplyError(failures)

    def _ipv6_only_device(self, ifindex: int) -> tuple[str, PeerSettings]:
        """The name of an IPv6-only network's one device at ``ifindex`` and its peers' settings:
        as ``ensure`` chose it, else (``overlayd status``, which ensures nothing) as found."""
        name = self._single
        if name is None:
            link = self.kernel.find(DEVICE_NAME_V6)
            name = DEVICE_NAME_V6 if link is not None and link.index == ifindex else DEVICE_NAME
        return name, self._peer_settings6 if name == DEVICE_NAME_V6 else self._peer_settings

    def peer_actions(self) -> PeerActions | None:
        return None  # every peer is a WireGuard peer and a route

    def underlay_ingress(self, config: NetworkConfig) -> UnderlayIngress:
        """UDP to ListenPort; over IPv6 to ListenPortV6 where ``flannel-wg-v6`` listens."""
        section = settings(config)
        port6 = section.listen_port_v6 if section.separate_ipv6(serves_ipv6(config)) else None
        return UnderlayIngress(protocol="udp", port=section.listen_port, name=INGRESS_NAME, sealed=True,
                               ipv6_port=port6)

    def drift_probe(self, config: NetworkConfig) -> tuple[float, Callable[[], str | None]] | None:
        """Every ``PROBE_INTERVAL``: whether the device's keys, port or peers changed since the
        last full pass read them (a peer removed by hand, a restarted wireguard-go)."""
        return PROBE_INTERVAL, self._probe

    def _probe(self) -> str | None:
        kernel = self._kernel
        if kernel is None:
            return None
        for name, known in list(kernel.fingerprints.items()):
            if not known:
                continue
            expected = self._peer_settings6 if name == DEVICE_NAME_V6 else self._peer_settings
            try:
                dump = wgtool.show(name, expected)
            except Exception as err:  # the device is gone: the netlink monitor reports that
                log.debug("drift probe: %s", err)
                continue
            if dump.fingerprint != known:
                return f"WireGuard peers of {name} changed"
        return None

    def remove(self, config: NetworkConfig) -> list[str]:
        """The devices ``flannel-wg`` and ``flannel-wg-v6`` (their peers and routes go with them)."""
        return [f"deleted {name}" for name in (DEVICE_NAME, DEVICE_NAME_V6) if self.kernel.delete(name)]


def _never(lease: Lease) -> bool:
    return False
