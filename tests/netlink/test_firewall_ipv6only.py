"""The firewall of an IPv6-only network (FirewallSpec.network None): the ``ip6`` table alone,
and the ``ip`` table and iptables forward chain of an earlier IPv4 or dual-stack run removed."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from nsutil import in_netns

from overlayd.netfilter.family import IP6
from overlayd.netfilter.firewall import Firewall
from overlayd.netfilter.rules import FirewallSpec, IngressGuard, render_ruleset

V6_ONLY = FirewallSpec(
    network=None, own_subnet=None, ip_masq=True, forward_rules=True, ingress_allowlist=True,
    ingress=IngressGuard("udp", 8472, "vxlan"), ingress_sources=frozenset({IPv6Address("2001:db8::7")}),
    ipv6_network=IPv6Network("2001:db8:1000::/48"), ipv6_own_subnet=IPv6Network("2001:db8:1000:5::/64"),
)  # fmt: skip
DUAL = replace(
    V6_ONLY, network=IPv4Network("198.18.0.0/16"), own_subnet=IPv4Network("198.18.5.0/24"),
    ingress_sources=frozenset({IPv4Address("192.0.2.7"), IPv6Address("2001:db8::7")}),
)  # fmt: skip


def test_the_ip6_part_of_an_ipv6_only_spec_has_the_network_s_rules() -> None:
    script = render_ruleset(V6_ONLY.family_part(IP6), family=IP6)
    assert "ip6 saddr 2001:db8:1000::/48 ip6 daddr != ff00::/8 masquerade fully-random" in script
    assert "ip6 saddr != 2001:db8:1000::/48 ip6 daddr 2001:db8:1000:5::/64 return" in script
    assert "ip6 daddr 2001:db8:1000::/48 accept" in script
    assert "None" not in script and " ip " not in script


def nft(*argv: str) -> str:
    return subprocess.run(["nft", *argv], capture_output=True, text=True, check=False).stdout


def iptables_s() -> str:
    return subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout


def ipv6_only_steps() -> dict[str, object]:
    earlier = Firewall()
    steps: dict[str, object] = {"dual": earlier.ensure(DUAL)}
    steps["dual ip"], steps["dual iptables"] = nft("list", "table", "ip", "overlayd"), iptables_s()
    firewall = Firewall()  # the agent restarted on the IPv6-only config
    steps["first"], steps["second"] = firewall.ensure(V6_ONLY), firewall.ensure(V6_ONLY)
    steps["ip"], steps["ip6"] = (
        nft("list", "table", "ip", "overlayd"),
        nft("list", "table", "ip6", "overlayd"),
    )
    steps["iptables"] = iptables_s()
    firewall.allow_peer(IPv6Address("2001:db8::8"))
    steps["after allow"] = nft("list", "set", "ip6", "overlayd", "vxlan_peers")
    steps["dropped"] = firewall.dropped_sources()
    subprocess.run(["nft", "delete", "table", "ip6", "overlayd"], check=True)
    steps["repaired"] = firewall.ensure(V6_ONLY)
    steps["ip6 repaired"] = nft("list", "table", "ip6", "overlayd")
    firewall.remove()
    firewall.remove()  # idempotent
    steps["ip6 removed"] = nft("list", "table", "ip6", "overlayd")
    return steps


@pytest.mark.root
def test_an_ipv6_only_network_keeps_the_ip6_table_alone(netns: str) -> None:
    steps = in_netns(netns, ipv6_only_steps)
    assert steps["dual"] is True and "198.18.0.0/16" in steps["dual ip"]  # type: ignore[operator]
    assert "OVERLAYD-FWD" in steps["dual iptables"]  # type: ignore[operator]
    assert (steps["first"], steps["second"]) == (True, False)
    assert steps["ip"] == ""
    assert "OVERLAYD-FWD" not in steps["iptables"]  # type: ignore[operator]
    ip6 = steps["ip6"]
    assert "elements = { 2001:db8::7 }" in ip6  # type: ignore[operator]
    assert "ip6 saddr 2001:db8:1000::/48 ip6 daddr != ff00::/8 masquerade fully-random" in ip6  # type: ignore[operator]
    assert "ip6 saddr != 2001:db8:1000::/48 ip6 daddr 2001:db8:1000:5::/64 return" in ip6  # type: ignore[operator]
    assert "ip6 saddr 2001:db8:1000::/48 accept" in ip6  # type: ignore[operator]
    assert "2001:db8::8" in steps["after allow"]  # type: ignore[operator]
    assert steps["dropped"] == frozenset()
    assert steps["repaired"] is True and "ip6 daddr 2001:db8:1000::/48 accept" in steps["ip6 repaired"]  # type: ignore[operator]
    assert steps["ip6 removed"] == ""
