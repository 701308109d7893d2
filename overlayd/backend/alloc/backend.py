"""alloc behind the backend seam: this host's lease and subnet.env, nothing else.

For clusters whose routing is done by something else (a router told the subnets, a fabric): as
flanneld's alloc backend, the lease carries only the PublicIP (``{"PublicIP":…,"PublicIPv6":null}``,
no ``BackendType``, no ``BackendData``), no device is made and peers are not programmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from overlayd.backend.api import HostFacts, Ipv6Support, PeerActions
from overlayd.backend.deviceless import NoDevice
from overlayd.backend.section import KeylessSection
from overlayd.subnet.config import BackendSettings, ConfigFields, NetworkConfig
from overlayd.subnet.lease import LeaseAttrs

TYPE = "alloc"


@dataclass(frozen=True)
class AllocConfig(KeylessSection):
    """alloc's section has no keys of its own; any others are ignored, as flanneld does."""

    type: str = TYPE
    summary: str = "subnet leases only, no data path"


def parse_alloc_config(fields: ConfigFields) -> AllocConfig:
    return AllocConfig()


class Alloc(NoDevice):
    """The alloc backend."""

    type: ClassVar[str] = TYPE
    data_codec: ClassVar[None] = None  # its leases have no BackendData
    parse_config = staticmethod(parse_alloc_config)
    routes_traffic: ClassVar[bool] = False
    ipv6_support: ClassVar[Ipv6Support] = Ipv6Support.IPV6_ONLY

    def config_fields(self, config: BackendSettings) -> dict[str, object]:
        return {"Type": TYPE}

    def lease_data(self, config: NetworkConfig, host: HostFacts) -> LeaseAttrs:
        """Only the PublicIP: flanneld's alloc lease sets no BackendType (so none is written). An
        IPv6-only network's lease carries the PublicIPv6 too: it tells our lease from others'."""
        public_ipv6 = host.public_ipv6 if config.ipv4 is None else None
        return LeaseAttrs(public_ip=host.public_ip, public_ipv6=public_ipv6)

    def peer_actions(self) -> PeerActions | None:
        return None

    def drift_probe(self, config: NetworkConfig) -> None:
        return None  # netlink reports every change of its state, or it has none
