"""The WireGuard backend's ``Backend`` section: flannel's keys and defaults, and the MTU it leaves."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from overlayd.backend.wireguard.keys import BadKey, parse_key
from overlayd.subnet.config import BackendSettings, ConfigFields

TYPE = "wireguard"
DEVICE_NAME = "flannel-wg"
DEVICE_NAME_V6 = "flannel-wg-v6"
DEFAULT_PORT = 51820
DEFAULT_PORT_V6 = 51821
# WireGuard over IPv4 adds up to 80 bytes, flannel's figure: outer IP (20, 40 for IPv6) + UDP (8)
# + type (4) + key index (4) + nonce (8) + authentication tag (16).
WIREGUARD_OVERHEAD = 80


class Mode(enum.Enum):
    """flannel's ``Mode`` in a dual-stack network: a device per family (separate), or one device
    carrying both, its peers reached over IPv4 (ipv4), IPv6 (ipv6) or whichever flannel deems
    likelier to connect (auto). In an IPv6-only network: ``flannel-wg-v6`` (separate) or
    ``flannel-wg`` (ipv6, auto), peers reached over IPv6; ipv4 is refused (``network_problem``)."""

    SEPARATE = "separate"
    AUTO = "auto"
    IPV4 = "ipv4"
    IPV6 = "ipv6"


@dataclass(frozen=True)
class WireguardConfig:
    type: str = TYPE
    listen_port: int = DEFAULT_PORT
    listen_port_v6: int = DEFAULT_PORT_V6
    psk: str = field(default="", repr=False)  # base64, as `wg genpsk` writes it; "" for none; a secret
    keepalive: int = 0  # PersistentKeepaliveInterval, seconds; 0: off
    mode: Mode = Mode.SEPARATE

    @property
    def restart_key(self) -> tuple[object, ...]:
        """The devices' ports and the PSK of every peer are set in place; a new Mode lays the
        devices out anew (as flanneld, which reads it at start), so it restarts the agent."""
        return (self.type, self.mode)

    @property
    def summary(self) -> str:
        psk = ", PSK" if self.psk else ""
        v6 = f" (IPv6 {self.listen_port_v6})" if self.mode is Mode.SEPARATE else ""
        return f"port {self.listen_port}{v6} mode {self.mode.value}{psk}"  # never the PSK itself

    def restart_reason(self, previous: BackendSettings) -> str:
        if isinstance(previous, WireguardConfig) and previous.mode is not self.mode:
            return f"Mode {previous.mode.value} -> {self.mode.value}"
        return f"Backend {previous.type} -> {self.type}"

    @property
    def device_name(self) -> str:
        return DEVICE_NAME

    def separate_ipv6(self, dual_stack: bool) -> bool:
        """Whether the IPv6 half has a device of its own (``flannel-wg-v6``): Mode separate in a
        dual-stack network. The other modes carry both halves in ``flannel-wg``."""
        return dual_stack and self.mode is Mode.SEPARATE

    def mode_problem(self, dual_stack: bool) -> str | None:
        """Why this Mode cannot serve the network (``dual_stack`` or IPv4 only), or None.
        flanneld takes Mode ipv6 in an IPv4-only network and then fails on every peer, whose
        endpoint would be an IPv6 address it does not have."""
        if self.mode is Mode.IPV6 and not dual_stack:
            return ("Backend.Mode ipv6 reaches peers at their PublicIPv6, which a network without "
                    "EnableIPv6 does not publish; use Mode separate, auto or ipv4, or make the "
                    "network dual-stack (EnableIPv6 with an IPv6Network)")
        return None

    def network_problem(self, ipv4: bool, ipv6: bool) -> str | None:
        """Why this Mode cannot run a network of these families, or None: the config is refused
        with it. Mode ipv4 reaches every peer at its PublicIP, which in an IPv6-only network is
        0.0.0.0 on every host (flanneld takes it and then reaches no peer)."""
        if self.mode is Mode.IPV4 and not ipv4 and ipv6:
            return ("Backend.Mode ipv4 reaches peers at their PublicIP, which an IPv6-only network "
                    "(EnableIPv4 false) leaves 0.0.0.0; use Mode separate (flannel-wg-v6), ipv6 or "
                    "auto (flannel-wg), or set EnableIPv4 true with an IPv4 Network")
        return None

    def device_mtu(self, interface_mtu: int) -> int:
        """The device's MTU, which is also FLANNEL_MTU: the underlay's less the overhead."""
        return interface_mtu - WIREGUARD_OVERHEAD


def parse_wireguard_config(fields: ConfigFields) -> WireguardConfig:
    """The ``Backend`` section of a wireguard network (keys lower-cased); raises ConfigError."""
    raw_mode = fields.value.get("mode")
    modes = ", ".join(mode.value for mode in Mode)
    try:
        mode = Mode(raw_mode) if raw_mode not in (None, "") else Mode.SEPARATE
    except ValueError:
        raise fields.fail("Mode", raw_mode, f"use one of {modes}") from None
    raw_psk = fields.value.get("psk")
    psk = ""
    if raw_psk not in (None, ""):
        try:
            psk = parse_key(raw_psk)
        except BadKey:
            # The value is a secret: the message names the key, not what it holds.
            raise fields.fail("PSK", "<hidden>", "use a 32-byte base64 key, as `wg genpsk` prints") from None
    return WireguardConfig(
        listen_port=fields.get_int("ListenPort", DEFAULT_PORT, 1, 65535),
        listen_port_v6=fields.get_int("ListenPortV6", DEFAULT_PORT_V6, 1, 65535),
        psk=psk,
        keepalive=fields.get_int("PersistentKeepaliveInterval", 0, 0, 65535),
        mode=mode,
    )


def config_fields(config: WireguardConfig) -> dict[str, object]:
    """The section as the config command shows it: flannel's keys, defaults filled in, no secret."""
    return {
        "Type": config.type,
        "ListenPort": config.listen_port,
        "ListenPortV6": config.listen_port_v6,
        "PSK": "<set>" if config.psk else "",
        "PersistentKeepaliveInterval": config.keepalive,
        "Mode": config.mode.value,
    }
