"""The host-gw backend's ``Backend`` section: flannel's has no keys besides ``Type``."""

from __future__ import annotations

from dataclasses import dataclass

from overlayd.subnet.config import BackendSettings, ConfigFields

TYPE = "host-gw"


@dataclass(frozen=True)
class HostGwConfig:
    type: str = TYPE

    @property
    def restart_key(self) -> tuple[object, ...]:
        return (self.type,)

    @property
    def summary(self) -> str:
        return "routes via peers' PublicIPs"

    def restart_reason(self, previous: BackendSettings) -> str:
        return f"Backend {previous.type} -> {self.type}"


def parse_host_gw_config(fields: ConfigFields) -> HostGwConfig:
    """The ``Backend`` section of a host-gw network: any other key is ignored, as flanneld does."""
    return HostGwConfig()


def config_fields(config: HostGwConfig) -> dict[str, object]:
    return {"Type": config.type}
