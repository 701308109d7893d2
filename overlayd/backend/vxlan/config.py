"""The VXLAN backend's ``Backend`` section: flannel's keys and defaults, and the MTU it leaves."""

from __future__ import annotations

from dataclasses import dataclass

from overlayd.subnet.config import BackendSettings, ConfigFields, is_unset

TYPE = "vxlan"
# The kernel's VXLAN port, and what flannel's Port 0 means.
DEFAULT_VXLAN_PORT = 8472
# VXLAN over IPv4 adds 50 bytes: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
VXLAN_OVERHEAD = 50
MAX_VNI = (1 << 24) - 1
# The smallest MTU every IPv4 host must take: what the device keeps at least.
MIN_INNER_MTU = 576


@dataclass(frozen=True)
class VxlanConfig:
    type: str = TYPE
    vni: int = 1
    port: int = DEFAULT_VXLAN_PORT
    gbp: bool = False
    learning: bool = False
    direct_routing: bool = False
    mtu: int | None = None  # the underlay's MTU, as in flanneld; None: the external interface's

    @property
    def restart_key(self) -> tuple[object, ...]:
        """A new VNI is a new device, and peers on the old one: the agent restarts for it."""
        return (self.type, self.vni)

    @property
    def summary(self) -> str:
        return f"VNI {self.vni} port {self.port}{', DirectRouting' if self.direct_routing else ''}"

    def restart_reason(self, previous: BackendSettings) -> str:
        if isinstance(previous, VxlanConfig):
            return f"VNI {previous.vni} -> {self.vni}"
        return f"Backend {previous.type} -> {self.type}"

    @property
    def device_name(self) -> str:
        return f"flannel.{self.vni}"

    def device_mtu(self, interface_mtu: int) -> int:
        """The VXLAN device's MTU, which is also FLANNEL_MTU: the underlay's less the overhead."""
        return (self.mtu or interface_mtu) - VXLAN_OVERHEAD


def parse_vxlan_config(fields: ConfigFields) -> VxlanConfig:
    """The ``Backend`` section of a vxlan network (keys lower-cased); raises ConfigError."""
    port = fields.get_int("Port", 0, 0, 65535) or DEFAULT_VXLAN_PORT
    mtu_raw = fields.value.get("mtu")
    # The underlay's MTU, as in flanneld: the device and FLANNEL_MTU get VXLAN_OVERHEAD less.
    mtu = fields.get_int("MTU", 0, MIN_INNER_MTU + VXLAN_OVERHEAD, 65535) if not is_unset(mtu_raw) else None
    return VxlanConfig(
        vni=fields.get_int("VNI", 1, 0, MAX_VNI),
        port=port,
        gbp=fields.get_bool("GBP"),
        learning=fields.get_bool("Learning"),
        direct_routing=fields.get_bool("DirectRouting"),
        mtu=mtu,
    )


def config_fields(config: VxlanConfig) -> dict[str, object]:
    """The section as the config command shows it: flannel's keys, every default filled in."""
    return {
        "Type": config.type,
        "VNI": config.vni,
        "Port": config.port,
        "GBP": config.gbp,
        "Learning": config.learning,
        "DirectRouting": config.direct_routing,
        "MTU": config.mtu,  # null: the external interface's MTU (the device gets 50 less)
    }
