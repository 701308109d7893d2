"""Fake peer leases in flannel's etcd format, for the agent under test to program.

Peer ``i`` owns the i-th /28 of 198.18.0.0/15 (room for 8190 peers), a distinct VTEP MAC and a
PublicIP among 192.0.2.100..249. The network config's SubnetMin keeps the agent's own lease in
the top ``OWN_POOL`` subnets, above every index the benchmark hands out, so a fake peer never
lands on the agent's subnet however many are written. A network of another ``Family`` gives its
peers an IPv6 half (the i-th /64 of 2001:db8:1000::/48), or that half alone.
"""

from __future__ import annotations

import enum
import json
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, LeaseAttrs, encode_attrs, subnet_to_key


class Family(enum.Enum):
    """The address families of the benchmark's network and of its fake peers' leases."""

    IPV4 = "IPv4-only"
    DUAL = "dual-stack"
    IPV6_ONLY = "IPv6-only"  # EnableIPv4 false: flanneld's 0.0.0.0-0&<v6> leases, flannel-v6.1 alone

    @property
    def has_ipv4(self) -> bool:
        return self is not Family.IPV6_ONLY

    @property
    def has_ipv6(self) -> bool:
        return self is not Family.IPV4


NETWORK = IPv4Network("198.18.0.0/15")
SUBNET_LEN = 28
# The IPv6 half of a dual-stack run's peers, all of an IPv6-only run's: peer i owns the i-th /64
# of the /48, the agent's own lease the same index range above every peer's as in IPv4.
IPV6_NETWORK = IPv6Network("2001:db8:1000::/48")
VNI = 1
PREFIX = "/coreos.com/network/subnets/"
SUBNETS = 1 << (SUBNET_LEN - NETWORK.prefixlen)
OWN_POOL = 64  # the agent's own subnet comes from the last 64 /28s
MAX_PEER_INDEX = SUBNETS - OWN_POOL - 1
TXN_OPS = 100  # etcd's default --max-txn-ops is 128


def peer_subnet(i: int) -> IPv4Network:
    """The i-th /28 of the network (i >= 1)."""
    size = 1 << (32 - SUBNET_LEN)
    return IPv4Network((int(NETWORK.network_address) + i * size, SUBNET_LEN))


def peer_subnet6(i: int) -> IPv6Network:
    """The i-th /64 of the IPv6 network (i >= 1)."""
    return IPv6Network((int(IPV6_NETWORK.network_address) + (i << 64), 64))


def network_config(family: Family = Family.IPV4) -> str:
    """The flannel network config the benchmark lab runs with (JSON), of ``family``."""
    subnet_min = peer_subnet(SUBNETS - OWN_POOL).network_address
    config: dict[str, object] = (
        {"Network": str(NETWORK), "SubnetLen": SUBNET_LEN, "SubnetMin": str(subnet_min)}
        if family.has_ipv4
        else {"EnableIPv4": False}
    )
    if family.has_ipv6:
        ipv6_min = peer_subnet6(SUBNETS - OWN_POOL).network_address
        config |= {"EnableIPv6": True, "IPv6Network": str(IPV6_NETWORK), "IPv6SubnetMin": str(ipv6_min)}
    return json.dumps(config | {"Backend": {"Type": "vxlan"}})


def peer_mac(i: int) -> str:
    return f"0e:be:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def peer_ip(i: int) -> IPv4Address:
    return IPv4Address("192.0.2.100") + i % 150


def peer_mac6(i: int) -> str:
    """Peer ``i``'s IPv6 device's VTEP MAC."""
    return f"0e:b6:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def peer_ip6(i: int) -> IPv6Address:
    return IPv6Address("2001:db8::100") + i % 150


def moved_mac(i: int) -> str:
    """Peer ``i``'s VTEP MAC after an update (a new device on the same host)."""
    return f"0e:bf:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def moved_ip(i: int) -> IPv4Address:
    """Peer ``i``'s PublicIP after an update (another address in the same range)."""
    return peer_ip(i + 1)


def peer_kv(
    i: int, mac: str | None = None, public_ip: IPv4Address | None = None, family: Family = Family.IPV4
) -> tuple[str, str]:
    """The etcd key and flannel JSON value of peer ``i`` in a network of ``family`` (with another
    MAC or PublicIP if given: its IPv4 half's)."""
    if not 1 <= i <= MAX_PEER_INDEX:
        raise ValueError(f"peer index {i} outside 1..{MAX_PEER_INDEX}")
    if family is Family.IPV6_ONLY and (mac or public_ip):
        raise ValueError(f"peer {i}: an IPv6-only lease has no IPv4 MAC or PublicIP to change")
    ip, mac = public_ip or peer_ip(i), mac or peer_mac(i)
    attrs = LeaseAttrs(public_ip=ip, backend_type="vxlan", vni=VNI, vtep_mac=mac)
    if family is Family.IPV6_ONLY:  # as flanneld writes one: PublicIP 0.0.0.0, BackendV6Data alone
        attrs = LeaseAttrs(NO_PUBLIC_IP, "vxlan", VNI, public_ipv6=peer_ip6(i), vtep_mac_v6=peer_mac6(i))
    elif family is Family.DUAL:
        attrs = replace(attrs, public_ipv6=peer_ip6(i), vtep_mac_v6=peer_mac6(i))
    subnet = peer_subnet(i) if family.has_ipv4 else NO_IPV4_SUBNET
    subnet6 = peer_subnet6(i) if family.has_ipv6 else None
    return PREFIX + subnet_to_key(subnet, subnet6), encode_attrs(attrs)


def put_peers(client: Any, indices: range | list[int], family: Family = Family.IPV4) -> None:
    """Write the peers' leases (no TTL), ``TXN_OPS`` puts per transaction."""
    kvs = [peer_kv(i, family=family) for i in indices]
    for start in range(0, len(kvs), TXN_OPS):
        puts = [client.transactions.put(k, v) for k, v in kvs[start : start + TXN_OPS]]
        client.transaction(compare=[], success=puts, failure=[])


def delete_peers(client: Any, indices: range | list[int]) -> None:
    keys = [peer_kv(i)[0] for i in indices]
    for start in range(0, len(keys), TXN_OPS):
        deletes = [client.transactions.delete(k) for k in keys[start : start + TXN_OPS]]
        client.transaction(compare=[], success=deletes, failure=[])
