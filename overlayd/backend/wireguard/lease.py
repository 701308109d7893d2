"""What a WireGuard lease publishes: ``BackendData`` ``{"PublicKey": <base64 key>}``, both ways,
and in a dual-stack network the same object as ``BackendV6Data`` (one key for both devices); an
IPv6-only lease carries ``BackendV6Data`` alone. flanneld v0.28 adds a ``"Port"`` to both objects:
read (and dropped, as v0.20.2 does), never written, since every peer's port is our ListenPort(V6).

flanneld v0.20.2 writes exactly these objects. The codec checks the key and keeps the canonical JSON in
``LeaseAttrs.extra_backend_data``, so no field of the shared lease type is WireGuard's; a lease
whose key is not 32 bytes of base64 is a bad lease (named once, never programmed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

from overlayd.backend.wireguard.config import TYPE
from overlayd.backend.wireguard.keys import BadKey, parse_key
from overlayd.subnet.lease import NO_PUBLIC_IP, LeaseAttrs, LeaseError

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


def _key_in(data: str) -> str | None:
    if not data:
        return None
    value = json.loads(data)
    return value.get(PUBLIC_KEY) if isinstance(value, dict) else None


def public_key_of(attrs: LeaseAttrs) -> str | None:
    """The peer's public key a decoded wireguard lease carries; None if it carries none."""
    return _key_in(attrs.extra_backend_data)


def public_key_v6_of(attrs: LeaseAttrs) -> str | None:
    """The public key of the lease's IPv6 half (its BackendV6Data); None if it has none."""
    return _key_in(attrs.extra_backend_v6_data)


def wireguard_lease_attrs(
    public_ip: IPv4Address, public_key: str, public_ipv6: IPv6Address | None = None
) -> LeaseAttrs:
    """What this host publishes: its PublicIP and its public key; with ``public_ipv6`` (a
    dual-stack network) its PublicIPv6 and the same key again as BackendV6Data, as flanneld."""
    attrs = LeaseAttrs(public_ip=public_ip, backend_type=TYPE, extra_backend_data=_canonical(public_key))
    if public_ipv6 is None:
        return attrs
    return replace(attrs, public_ipv6=public_ipv6, extra_backend_v6_data=_canonical(public_key))


def wireguard_ipv6_only_attrs(public_ipv6: IPv6Address, public_key: str) -> LeaseAttrs:
    """What this host publishes in an IPv6-only network, as flanneld: PublicIP 0.0.0.0, its
    PublicIPv6, and its public key as BackendV6Data alone (no BackendData)."""
    return LeaseAttrs(public_ip=NO_PUBLIC_IP, backend_type=TYPE, public_ipv6=public_ipv6,
                      extra_backend_v6_data=_canonical(public_key))  # fmt: skip
