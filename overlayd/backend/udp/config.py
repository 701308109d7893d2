"""The udp backend's ``Backend`` section: flannel's one key, ``Port``, and the MTU it leaves."""

from __future__ import annotations

from dataclasses import dataclass

from overlayd.subnet.config import BackendSettings, ConfigFields

TYPE = "udp"
DEFAULT_UDP_PORT = 8285
# Each inner IP packet rides in one UDP datagram: outer IPv4 (20) + UDP (8).
UDP_OVERHEAD = 28
DEVICE_NAME = "flannel0"


@dataclass(frozen=True)
class UdpConfig:
    type: str = TYPE
    port: int = DEFAULT_UDP_PORT

    @property
    def restart_key(self) -> tuple[object, ...]:
        """The forwarder's socket is bound to the port: a new port is a new forwarder."""
        return (self.type, self.port)

    @property
    def summary(self) -> str:
        return f"port {self.port}"

    def restart_reason(self, previous: BackendSettings) -> str:
        if isinstance(previous, UdpConfig):
            return f"Port {previous.port} -> {self.port}"
        return f"Backend {previous.type} -> {self.type}"

    def device_mtu(self, interface_mtu: int) -> int:
        """flannel0's MTU, which is also FLANNEL_MTU: the external interface's less the overhead."""
        return interface_mtu - UDP_OVERHEAD


def parse_udp_config(fields: ConfigFields) -> UdpConfig:
    """The ``Backend`` section of a udp network (keys lower-cased); raises ConfigError."""
    return UdpConfig(port=fields.get_int("Port", 0, 0, 65535) or DEFAULT_UDP_PORT)


def config_fields(config: UdpConfig) -> dict[str, object]:
    """The section as the config command shows it: flannel's keys, every default filled in."""
    return {"Type": config.type, "Port": config.port}
