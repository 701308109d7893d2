"""What a udp lease publishes: its PublicIP alone. flanneld's udp lease carries no BackendType
and no BackendData (``{"PublicIP":"192.0.2.11","PublicIPv6":null}``), and so does ours."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

from overlayd.backend.udp.config import TYPE as CONFIG_TYPE
from overlayd.subnet.lease import Lease, LeaseAttrs

# A udp lease's BackendType: none, as Go's omitempty leaves an empty one out.
LEASE_TYPE = ""


class UdpLeaseData:
    """The ``BackendDataCodec`` of the udp backend: there is no BackendData to carry."""

    def encode(self, attrs: LeaseAttrs) -> dict[str, object] | None:
        return None

    def decode(self, key: str, data: Mapping[str, object]) -> dict[str, object]:
        return {}


def udp_lease_attrs(public_ip: IPv4Address) -> LeaseAttrs:
    return LeaseAttrs(public_ip=public_ip, backend_type=LEASE_TYPE)


def is_udp_peer(lease: Lease, own: Lease) -> bool:
    """Another host's lease of the udp kind (no BackendType, or "udp"; no BackendData). flanneld
    forwards to every lease it sees; one of another backend would not understand our datagrams."""
    return (
        lease.subnet != own.subnet
        and lease.attrs.public_ip != own.attrs.public_ip
        and lease.attrs.backend_type in (LEASE_TYPE, CONFIG_TYPE)
        and not lease.attrs.extra_backend_data
    )
