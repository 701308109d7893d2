"""The host-gw backend's ``Backend`` section: flannel's has no keys besides ``Type``."""

from __future__ import annotations

from dataclasses import dataclass

from overlayd.backend.section import KeylessSection
from overlayd.subnet.config import ConfigFields

TYPE = "host-gw"


@dataclass(frozen=True)
class HostGwConfig(KeylessSection):
    type: str = TYPE
    summary: str = "routes via peers' PublicIPs"


def parse_host_gw_config(fields: ConfigFields) -> HostGwConfig:
    """The ``Backend`` section of a host-gw network: any other key is ignored, as flanneld does."""
    return HostGwConfig()


def config_fields(config: HostGwConfig) -> dict[str, object]:
    return {"Type": config.type}
