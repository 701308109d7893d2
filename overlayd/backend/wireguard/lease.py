"""What a WireGuard lease publishes: ``BackendData`` ``{"PublicKey": <base64 key>}``, both ways.

flanneld writes exactly this object. The codec checks the key and keeps the canonical JSON in
``LeaseAttrs.extra_backend_data``, so no field of the shared lease type is WireGuard's; a lease
whose key is not 32 bytes of base64 is a bad lease (named once, never programmed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from ipaddress import IPv4Address

from overlayd.backend.wireguard.config import TYPE
from overlayd.backend.wireguard.keys import BadKey, parse_key
from overlayd.subnet.lease import LeaseAttrs, LeaseError

PUBLIC_KEY = "PublicKey"


def _canonical(public_key: str) -> str:
    return json.dumps({PUBLIC_KEY: public_key}, separators=(",", ":"))


class WireguardLeaseData:
    """The ``BackendDataCodec`` of wireguard leases (``overlayd.subnet.lease`` calls it)."""

    def encode(self, attrs: LeaseAttrs) -> dict[str, object] | None:
        return json.loads(attrs.extra_backend_data) if attrs.extra_backend_data else None

    def decode(self, key: str, data: Mapping[str, object]) -> dict[str, object]:
        raw = data.get(PUBLIC_KEY)
        try:
            public_key = parse_key(raw)
        except BadKey as err:
            raise LeaseError(
                f"lease {key}: wireguard BackendData needs a PublicKey of 32 bytes in base64 ({err}): "
                f"{str(raw)[:60]!r}", "bad_backend_data",
            ) from None
        return {"extra_backend_data": _canonical(public_key)}


def public_key_of(attrs: LeaseAttrs) -> str | None:
    """The peer's public key a decoded wireguard lease carries; None if it carries none."""
    if not attrs.extra_backend_data:
        return None
    value = json.loads(attrs.extra_backend_data)
    return value.get(PUBLIC_KEY) if isinstance(value, dict) else None


def wireguard_lease_attrs(public_ip: IPv4Address, public_key: str) -> LeaseAttrs:
    """What this host publishes: its PublicIP and its public key."""
    return LeaseAttrs(public_ip=public_ip, backend_type=TYPE, extra_backend_data=_canonical(public_key))
