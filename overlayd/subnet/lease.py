"""Subnet leases as flannel stores them in etcd: the key format and the JSON value codec.

Peers running flanneld read what we write and we read what they write, so the value is encoded
byte for byte as Go's ``encoding/json`` renders flannel's ``LeaseAttrs`` struct (field order,
no spaces, ``null`` for an absent IPv6 address).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from socket import AF_INET6, inet_aton, inet_pton
from typing import TYPE_CHECKING, Protocol

from overlayd.base.gojson import go_json

if TYPE_CHECKING:
    from overlayd.subnet.config import NetworkConfig

_KEY_RE = re.compile(
    r"^(?P<ip>[0-9]{1,3}(?:\.[0-9]{1,3}){3})-(?P<len>[0-9]{1,2})"
    r"(?:&(?P<ip6>[0-9a-fA-F:]+)-(?P<len6>[0-9]{1,3}))?$"
)
# A dotted quad as ``ipaddress`` spells it (no leading zeros, each octet at most 255). Such text
# is parsed by ``inet_aton`` in C; anything else goes to ``ipaddress``, which accepts or rejects
# it with its own message. At 1000 peers the start-up listing parsed 2000 addresses at ~5 us each.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
# IPv6 text of hex groups and colons alone (no zone, no embedded IPv4), as flanneld writes it:
# parsed by ``inet_pton`` in C; text it refuses goes to ``ipaddress``, which accepts or rejects it
# with its own message. ``ipaddress`` took ~3 us for each of an IPv6 lease's key and PublicIPv6.
_IPV6_HEX = re.compile(r"[0-9a-fA-F:]{2,39}")
# ``json.loads`` without its per-call checks and encoding detection (6 us of a lease's ~20):
# the compact UTF-8 object flanneld writes is decoded here, anything else by ``json.loads``.
_decode_json = json.JSONDecoder().raw_decode
_MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
# The other spellings Go's net.ParseMAC takes for a 6-byte MAC, as flanneld reads a VtepMAC.
_DASHED_MAC_RE = re.compile(r"^[0-9a-f]{2}(?:-[0-9a-f]{2}){5}$")
_DOTTED_MAC_RE = re.compile(r"^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$")
# flanneld's values are about 150 bytes; anything far larger is not a lease and not worth parsing.
MAX_VALUE_BYTES = 4096


class LeaseError(ValueError):
    """A lease key or value that cannot be decoded; the message names the key.

    ``reason`` is a short label for metrics: bad_key, oversized, not_json, bad_public_ip or
    bad_backend_data.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LeaseAttrs:
    """What a host publishes about itself: where to send its traffic and how."""

    public_ip: IPv4Address
    backend_type: str = ""  # BackendType, as the backend names itself
    vni: int | None = None
    vtep_mac: str | None = None
    public_ipv6: IPv6Address | None = None
    # BackendData of a backend without a codec (any JSON value: extension's is a string), as compact
    # JSON text in Go's spelling (``overlayd.base.gojson``): kept whole (and hashable); "" when the
    # lease has none.
    extra_backend_data: str = ""
    # BackendV6Data (a dual-stack lease): the same backend's data for the IPv6 device. Its codec
    # reads it like BackendData; what differs is kept here: its VtepMAC (the MAC of
    # ``flannel-v6.<VNI>``) or, for a codec keeping its data whole (wireguard), its JSON.
    vtep_mac_v6: str | None = None
    extra_backend_v6_data: str = ""


@dataclass(frozen=True)
class Lease:
    """One host's subnet with its attributes and the etcd bookkeeping we need to renew it."""

    subnet: IPv4Network
    attrs: LeaseAttrs
    ipv6_subnet: IPv6Network | None = None
    etcd_lease_id: int = 0  # 0: no etcd lease attached (a reservation)
    mod_revision: int = field(default=0, compare=False)
    # When the key was created (etcd's create_revision): unlike mod_revision it stays put when the
    # holder renews, so "the older lease" of two rival claims does not change on a renewal.
    create_revision: int = field(default=0, compare=False)

    @property
    def key(self) -> str:
        return subnet_to_key(self.subnet, self.ipv6_subnet)

    @property
    def own_subnet(self) -> IPv4Network | IPv6Network:
        """The subnet that names this lease: its IPv4 one, or an IPv6-only lease's IPv6 one."""
        if self.ipv6_subnet is not None and self.subnet == NO_IPV4_SUBNET:
            return self.ipv6_subnet
        return self.subnet

    @property
    def public_address(self) -> IPv4Address | IPv6Address:
        """Where its host is: the PublicIP, or an IPv6-only lease's PublicIPv6."""
        attrs = self.attrs
        if attrs.public_ipv6 is not None and attrs.public_ip == NO_PUBLIC_IP and is_ipv6_only(self):
            return attrs.public_ipv6
        return attrs.public_ip


# The IPv4 half of an IPv6-only lease key (``0.0.0.0-0``) and its PublicIP, as flanneld renders
# its unset IPv4 fields: no IPv4 subnet and no IPv4 address, not all of IPv4.
NO_IPV4_SUBNET = IPv4Network("0.0.0.0/0")
NO_PUBLIC_IP = IPv4Address("0.0.0.0")


def serves_ipv6(config: NetworkConfig, own: Lease | None = None) -> bool:
    """Whether the IPv6 half is served: the config has an IPv6 pool (dual-stack or IPv6-only)
    and, given, our lease has an IPv6 subnet."""
    return config.ipv6 is not None and (own is None or own.ipv6_subnet is not None)


def is_ipv6_only(lease: Lease) -> bool:
    """Whether ``lease`` is an IPv6-only one: the ``0.0.0.0-0`` IPv4 half and an IPv6 subnet."""
    return lease.subnet == NO_IPV4_SUBNET and lease.ipv6_subnet is not None


class BackendDataCodec(Protocol):
    """One backend's ``BackendData``: what its leases carry beyond the PublicIP, both ways."""

    def encode(self, attrs: LeaseAttrs) -> dict[str, object] | None:
        """``attrs``' BackendData as the JSON object flanneld writes (None: ``null``)."""
        ...

    def decode(self, key: str, data: Mapping[str, object]) -> Mapping[str, object]:
        """The ``LeaseAttrs`` fields ``data`` carries, by name; raises LeaseError (bad_backend_data)."""
        ...


# The backends whose BackendData is decoded into fields, by BackendType; the others' is kept
# whole. The command line installs them at start (``overlayd.backend.select.install``).
_codecs: dict[str, BackendDataCodec] = {}


def install_backend_data(backend_type: str, codec: BackendDataCodec) -> None:
    _codecs[backend_type] = codec


def lease_vni(vni: int) -> int:
    """A VNI as leases carry it. flanneld's lease struct holds 16 bits: with VNI 70000 its
    device uses all 24, but its lease says 4464. We write the same, and compare peers' VNIs in
    this form, so that a mixed cluster on a VNI above 65535 still finds its peers."""
    return vni & 0xFFFF


def subnet_to_key(subnet: IPv4Network, ipv6_subnet: IPv6Network | None = None) -> str:
    """The last path element of a lease key: ``198.18.46.0-24`` (``&<v6>-<len>`` when dual stack)."""
    key = f"{subnet.network_address}-{subnet.prefixlen}"
    if ipv6_subnet is not None:
        key += f"&{ipv6_subnet.network_address}-{ipv6_subnet.prefixlen}"
    return key


def key_to_subnets(key: str) -> tuple[IPv4Network, IPv6Network | None]:
    """Parse a lease key's last element; raises LeaseError naming the key when malformed."""
    m = _KEY_RE.fullmatch(key)  # not match(): "$" would accept a trailing newline
    if not m:
        raise LeaseError(f"lease key {key!r} is not of the form A.B.C.D-LEN", "bad_key")
    try:
        subnet = _ipv4_network(m["ip"], int(m["len"]))
        ipv6 = _ipv6_network(m["ip6"], int(m["len6"])) if m["ip6"] else None
    except ValueError as exc:
        raise LeaseError(f"lease key {key!r}: {exc}", "bad_key") from None
    return subnet, ipv6


def _ipv4_address(text: str) -> IPv4Address:
    """``IPv4Address(text)``: the same result or the same ValueError, faster for a dotted quad."""
    return IPv4Address(inet_aton(text)) if _DOTTED_QUAD.fullmatch(text) else IPv4Address(text)


def _ipv4_network(address: str, prefixlen: int) -> IPv4Network:
    """``IPv4Network(f"{address}/{prefixlen}")`` (strict): the same result or the same ValueError."""
    if _DOTTED_QUAD.fullmatch(address):
        return IPv4Network((int.from_bytes(inet_aton(address)), prefixlen))
    return IPv4Network(f"{address}/{prefixlen}")


def _ipv6_int(text: str) -> int | None:
    """The address ``text`` spells if ``inet_pton`` reads it (see ``_IPV6_HEX``), else None."""
    if not _IPV6_HEX.fullmatch(text):
        return None
    try:
        return int.from_bytes(inet_pton(AF_INET6, text))
    except OSError:
        return None


def _ipv6_address(text: str) -> IPv6Address:
    """``IPv6Address(text)``: the same result or the same ValueError, faster for flanneld's text."""
    value = _ipv6_int(text)
    return IPv6Address(value) if value is not None else IPv6Address(text)


def _ipv6_network(address: str, prefixlen: int) -> IPv6Network:
    """``IPv6Network(f"{address}/{prefixlen}")`` (strict): the same result or the same ValueError."""
    value = _ipv6_int(address) if 0 <= prefixlen <= 128 else None
    if value is not None:
        return IPv6Network((value, prefixlen))
    return IPv6Network(f"{address}/{prefixlen}")


def _json_value(raw: bytes | str) -> object:
    """``json.loads(raw)``: the same value or the same error, faster for compact UTF-8 JSON."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        value, end = _decode_json(text)
        if end == len(text):
            return value
    except ValueError:  # also UnicodeDecodeError: json.loads detects UTF-16 and UTF-32 too
        pass
    return json.loads(raw)


def encode_attrs(attrs: LeaseAttrs) -> str:
    """Render attrs exactly as flanneld does (Go struct field order, compact separators).

    Go omits an empty ``BackendType``, ``BackendData`` and ``BackendV6Data`` (``omitempty``),
    never ``PublicIPv6``: flanneld's udp and alloc leases are ``{"PublicIP":…,"PublicIPv6":null}``
    and nothing more."""
    value: dict[str, object] = {
        "PublicIP": str(attrs.public_ip),
        "PublicIPv6": str(attrs.public_ipv6) if attrs.public_ipv6 else None,
    }
    if attrs.backend_type:
        value["BackendType"] = attrs.backend_type
    codec = _codecs.get(attrs.backend_type)
    if codec is None:
        text = json.dumps(value, separators=(",", ":"))
        # Already Go's JSON text (``go_json``): written as it is, as Go writes a RawMessage.
        if attrs.extra_backend_data:
            text = f'{text[:-1]},"BackendData":{attrs.extra_backend_data}}}'
        if attrs.extra_backend_v6_data:
            text = f'{text[:-1]},"BackendV6Data":{attrs.extra_backend_v6_data}}}'
        return text
    # flanneld writes BackendData only beside an IPv4 PublicIP: an IPv6-only lease (PublicIP
    # 0.0.0.0, its data for the IPv6 device) has none.
    v6_half = _v6_half(attrs)
    v6 = codec.encode(v6_half) if v6_half is not None else None
    ipv6_only = attrs.public_ip.is_unspecified and v6_half is not None
    backend = None if ipv6_only else codec.encode(attrs)
    if backend is not None:
        value["BackendData"] = backend
    if v6 is not None:
        value["BackendV6Data"] = v6
    return json.dumps(value, separators=(",", ":"))


# The fields a codec fills from BackendData, and where the same fields of BackendV6Data go: the
# IPv6 device's own VTEP MAC (vxlan), its own JSON (a backend keeping its data whole, wireguard).
_V6_FIELDS = {"vtep_mac": "vtep_mac_v6", "extra_backend_data": "extra_backend_v6_data"}


def _v6_half(attrs: LeaseAttrs) -> LeaseAttrs | None:
    """``attrs`` as its codec encodes BackendV6Data (the IPv6 fields in the places of the IPv4
    ones); None when the lease has no BackendV6Data."""
    if not attrs.vtep_mac_v6 and not attrs.extra_backend_v6_data:
        return None
    return replace(attrs, vtep_mac=attrs.vtep_mac_v6, extra_backend_data=attrs.extra_backend_v6_data)


def decode_attrs(key: str, raw: bytes | str) -> LeaseAttrs:
    """Parse a lease value written by flanneld or by us; raises LeaseError naming the key."""
    if len(raw) > MAX_VALUE_BYTES:
        raise LeaseError(f"lease {key}: value of {len(raw)} bytes exceeds {MAX_VALUE_BYTES}", "oversized")
    try:
        value = _json_value(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise LeaseError(f"lease {key}: value is not JSON ({exc})", "not_json") from None
    if not isinstance(value, dict):
        raise LeaseError(f"lease {key}: value is not a JSON object", "not_json")
    ip_raw = value.get("PublicIP")
    ipv6_raw = value.get("PublicIPv6")
    # Strings only: ipaddress would read a JSON number as an integer address.
    try:
        if not isinstance(ip_raw, str):
            raise ValueError(f"{ip_raw!r} is not an address string")
        public_ip = _ipv4_address(ip_raw)
    except ValueError as exc:
        raise LeaseError(f"lease {key}: PublicIP {ip_raw!r} is invalid ({exc})", "bad_public_ip") from None
    try:
        if ipv6_raw is not None and not isinstance(ipv6_raw, str):
            raise ValueError(f"{ipv6_raw!r} is not an address string")
        public_ipv6 = _ipv6_address(ipv6_raw) if ipv6_raw else None
    except ValueError as exc:
        raise LeaseError(
            f"lease {key}: PublicIPv6 {ipv6_raw!r} is invalid ({exc})", "bad_public_ip"
        ) from None
    # Missing is "", not vxlan, as flanneld reads it: such a lease (a reservation written by hand as
    # {"PublicIP": ...}) holds its subnet for that host, and no peer programs it.
    backend_type = value.get("BackendType") or ""
    if not isinstance(backend_type, str):
        raise LeaseError(f"lease {key}: BackendType {backend_type!r} is not a string", "bad_backend_data")
    backend = value.get("BackendData")
    backend_v6 = value.get("BackendV6Data")
    codec = _codecs.get(backend_type)
    if codec is None:
        # Go's RawMessage keeps any JSON value; null is what an omitted one reads back as.
        return LeaseAttrs(
            public_ip=public_ip,
            backend_type=backend_type,
            public_ipv6=public_ipv6,
            # In Go's spelling, which is flanneld's own: what it wrote reads back to the same text.
            extra_backend_data="" if backend is None else go_json(backend),
            extra_backend_v6_data="" if backend_v6 is None else go_json(backend_v6),
        )
    ipv6_only = backend is None and backend_v6 is not None and public_ip.is_unspecified
    backend = backend or {}
    if not isinstance(backend, dict):
        raise LeaseError(f"lease {key}: BackendData is not a JSON object", "bad_backend_data")
    if backend_v6 is not None and not isinstance(backend_v6, dict):
        raise LeaseError(f"lease {key}: BackendV6Data is not a JSON object", "bad_backend_data")
    v6_fields = codec.decode(key, backend_v6) if backend_v6 is not None else {}
    if ipv6_only:
        # flanneld's IPv6-only lease carries BackendV6Data alone: the VNI and the IPv6 device's MAC.
        fields = {name: value for name, value in v6_fields.items() if name not in _V6_FIELDS}
    else:
        fields = codec.decode(key, backend)
    v6_own = {_V6_FIELDS[name]: value for name, value in v6_fields.items() if name in _V6_FIELDS and value}
    if v6_own:
        fields = {**fields, **v6_own}
    # One construction: on a cold start every peer's lease is decoded here.
    return LeaseAttrs(public_ip, backend_type, public_ipv6=public_ipv6, **fields)


def canonical_mac(text: str) -> str | None:
    """``text`` (lower case) as ``aa:bb:cc:dd:ee:ff`` if it is a MAC in a spelling flanneld reads."""
    if _MAC_RE.fullmatch(text):
        return text
    if _DASHED_MAC_RE.fullmatch(text):
        return text.replace("-", ":")
    if _DOTTED_MAC_RE.fullmatch(text):
        digits = text.replace(".", "")
        return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    return None


def decode_lease(
    key: str, raw: bytes | str, etcd_lease_id: int = 0, mod_revision: int = 0, create_revision: int = 0
) -> Lease:
    """Build a Lease from a key's last element and its value."""
    subnet, ipv6_subnet = key_to_subnets(key)
    return Lease(
        subnet=subnet,
        attrs=decode_attrs(key, raw),
        ipv6_subnet=ipv6_subnet,
        etcd_lease_id=etcd_lease_id,
        mod_revision=mod_revision,
        create_revision=create_revision,
    )


def unicast_mac_problem(mac: str) -> str | None:
    """Why ``mac`` (``aa:bb:cc:dd:ee:ff``) cannot be a VTEP's address, or None if it can.

    The kernel refuses a permanent FDB entry for a multicast (and so the broadcast) address, and
    an all-zero one is the VXLAN device's default destination: every frame without an entry of
    its own would be sent to that lease's host."""
    octets = bytes.fromhex(mac.replace(":", ""))
    if not any(octets):
        return "the all-zero address"
    if octets[0] & 1:
        return "the broadcast address" if octets == b"\xff" * 6 else "a multicast address"
    return None
