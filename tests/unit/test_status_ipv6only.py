"""``overlayd status`` of an IPv6-only network: subnet.env without FLANNEL_SUBNET, our lease found
by its IPv6 subnet, leases shown by IPv6 subnet, PublicIPv6 and IPv6 VTEP MAC, and the ip6 table
named alone."""

from __future__ import annotations

import json
import math
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from overlayd.etcd.memory import MemoryEtcd, MemoryRegistry
from overlayd.ops.devicestatus import DeviceView
from overlayd.ops.status import (
    HostStatus,
    firewall_names,
    lease_views,
    own_leases,
    own_subnet,
    render_text,
    to_json,
)
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs
from overlayd.subnet.subnetenv import parse_keys

# What flanneld (and the agent) write in an IPv6-only network: no FLANNEL_NETWORK or FLANNEL_SUBNET.
ENV = parse_keys(
    "FLANNEL_IPV6_NETWORK=2001:db8:1000::/48\nFLANNEL_IPV6_SUBNET=2001:db8:1000:5::1/64\n"
    "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
)
DUAL_ENV = {"FLANNEL_NETWORK": "198.18.0.0/16", "FLANNEL_SUBNET": "198.18.5.1/24", **ENV}


def v6_attrs(n: int) -> LeaseAttrs:
    return LeaseAttrs(
        NO_PUBLIC_IP, "vxlan", vni=1, public_ipv6=IPv6Address(f"2001:db8::{n:x}"),
        vtep_mac_v6=f"02:00:00:00:06:{n:02x}",
    )  # fmt: skip


def registry_with(*hosts: int) -> tuple[MemoryRegistry, list[Lease]]:
    registry = MemoryRegistry(MemoryEtcd())
    for n in hosts:
        created = registry.create_lease(
            NO_IPV4_SUBNET, v6_attrs(n), 600, ipv6_subnet=IPv6Network(f"2001:db8:1000:{n:x}::/64")
        )
        assert created is not None
    return registry, registry.list_leases()[0]


def test_own_subnet_is_the_ipv6_one_where_subnet_env_has_no_ipv4_lines() -> None:
    assert own_subnet(ENV) == IPv6Network("2001:db8:1000:5::/64")
    assert own_subnet(DUAL_ENV) == IPv4Network("198.18.5.0/24")  # dual-stack: the IPv4 one, as before
    assert own_subnet({**ENV, "FLANNEL_IPV6_SUBNET": "garbage"}) is None
    # An IPv4 file that lost its FLANNEL_SUBNET is not taken for an IPv6-only one.
    assert (
        own_subnet({"FLANNEL_NETWORK": "198.18.0.0/16", "FLANNEL_IPV6_SUBNET": "2001:db8:1000:5::1/64"})
        is None
    )


def test_our_ipv6_only_lease_is_found_by_its_ipv6_subnet_not_by_0_0_0_0() -> None:
    registry, found = registry_with(4, 5, 6)
    mine = own_leases(found, own_subnet(ENV))
    assert [lease.key for lease in mine] == ["0.0.0.0-0&2001:db8:1000:5::-64"]
    routes = frozenset({"2001:db8:1000:4::/64"})  # host 6's route is missing here
    own, leases = lease_views(registry, found, own_subnet(ENV), routes, cluster=True)
    assert own is not None
    assert (own.subnet, own.public_ip, own.ipv6_subnet, own.public_ipv6, own.vtep_mac_v6) == (
        None, None, "2001:db8:1000:5::/64", "2001:db8::5", "02:00:00:00:06:05"
    )  # fmt: skip
    assert own.ttl is not None and 0 < own.ttl <= 600
    assert leases is not None
    assert [(lease.ipv6_subnet, lease.programmed) for lease in leases] == [
        ("2001:db8:1000:4::/64", True),
        ("2001:db8:1000:5::/64", None),  # this host
        ("2001:db8:1000:6::/64", False),
    ]


def test_a_cluster_of_both_forms_sorts_ipv4_subnets_first() -> None:
    """An IPv4 lease left from before, beside IPv6-only ones: listed, not a crash comparing families."""
    registry, _ = registry_with(5)
    v4_attrs = LeaseAttrs(IPv4Address("192.0.2.9"), "vxlan", vni=1, vtep_mac="02:00:00:00:00:09")
    assert registry.create_lease(IPv4Network("198.18.9.0/24"), v4_attrs, 600) is not None
    found = registry.list_leases()[0]
    _, leases = lease_views(registry, found, own_subnet(ENV), frozenset(), cluster=True)
    assert leases is not None and [lease.subnet for lease in leases] == ["198.18.9.0/24", None]
    text = render_text(HostStatus("/run/flannel/subnet.env", subnet_env=ENV, leases=leases), now=0)
    rows = [
        line.split() for line in text.splitlines() if "2001:db8:1000:5::/64" in line or "198.18.9" in line
    ]
    assert rows[0][:4] == ["198.18.9.0/24", "-", "192.0.2.9", "02:00:00:00:00:09"]
    assert rows[1][:4] == ["-", "2001:db8:1000:5::/64", "2001:db8::5", "02:00:00:00:06:05"]


def test_text_of_an_ipv6_only_host_and_cluster() -> None:
    registry, found = registry_with(4, 5)
    own, leases = lease_views(
        registry, found, own_subnet(ENV), frozenset({"2001:db8:1000:4::/64"}), cluster=True
    )
    status = HostStatus(
        subnet_file="/run/flannel/subnet.env",
        subnet_env=ENV,
        device=DeviceView("flannel-v6.1", 1430, "02:00:00:00:06:05", ("2001:db8:1000:4::/64",), 1, 1),
        agent_error="metrics server is off",
        own_lease=own,
        leases=leases,
        firewall=firewall_names("/coreos.com/network", ENV),
    )
    text = render_text(status, now=0)
    assert "FLANNEL_IPV6_SUBNET=2001:db8:1000:5::1/64" in text and "FLANNEL_SUBNET" not in text
    assert "flannel-v6.1 mtu 1430 mac 02:00:00:00:06:05: 1 routes, 1 neighbours, 1 fdb entries" in text
    assert "etcd lease  2001:db8:1000:5::/64 public 2001:db8::5 vtep 02:00:00:00:06:05 ttl " in text
    assert "0.0.0.0" not in text
    assert "  IPV6 SUBNET           PUBLIC IPV6  VTEP MAC           TTL    ROUTE HERE" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("  2001:db8:1000:")}
    assert rows["2001:db8:1000:4::/64"].endswith("yes") and rows["2001:db8:1000:5::/64"].endswith("this host")
    data = json.loads(json.dumps(to_json(status)))
    assert data["own_lease"]["subnet"] is None and data["own_lease"]["ipv6_subnet"] == "2001:db8:1000:5::/64"
    assert data["leases"][0]["reservation"] is False and not math.isinf(data["leases"][0]["ttl"])


def test_the_firewall_line_names_the_tables_of_the_families_in_subnet_env() -> None:
    names = firewall_names("/coreos.com/network", ENV)
    assert names.startswith("ip6 ") and "ip " not in names.replace("ip6 ", "") and "iptables" not in names
    assert firewall_names("/coreos.com/network", DUAL_ENV).count(", ") == 2
    ipv4 = firewall_names(
        "/coreos.com/network", {"FLANNEL_NETWORK": "198.18.0.0/16", "FLANNEL_SUBNET": "198.18.5.1/24"}
    )
    assert ipv4.startswith("ip ") and "ip6" not in ipv4 and "iptables chain" in ipv4
    # Nothing to go by (no subnet.env): the IPv4 names, as before.
    assert firewall_names("/coreos.com/network", None) == ipv4
