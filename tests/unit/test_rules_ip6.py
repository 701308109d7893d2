"""The ``ip6`` table of a dual-stack network: named as the network's ``ip`` table, with the same
rules as main's IPv4 ones (kube-proxy's mark, the VNI match, the sealed underlay) for IPv6."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network, IPv6Address, IPv6Network

from overlayd.base.headerfield import HeaderField
from overlayd.netfilter.family import IP6
from overlayd.netfilter.names import names_for_prefix
from overlayd.netfilter.rules import FirewallSpec, IngressGuard, render_ruleset

DUAL = FirewallSpec(
    network=IPv4Network("198.19.0.0/16"),
    own_subnet=IPv4Network("198.19.9.0/24"),
    ip_masq=True,
    forward_rules=True,
    ingress_allowlist=True,
    ingress=IngressGuard("udp", 8472, "vxlan", HeaderField(96, 24, 2)),
    ingress_sources=frozenset({IPv6Address("2001:db8::12")}),
    ipv6_network=IPv6Network("2001:db8:19::/48"),
    ipv6_own_subnet=IPv6Network("2001:db8:19:9::/64"),
)


def rules(script: str) -> list[str]:
    """The chains' rules, without the sets' and chains' declarations."""
    skip = ("type ", "elements ", "size ", "flags ", "timeout ")
    return [line.strip() for line in script.splitlines()
            if line.startswith("\t\t") and not line.strip().startswith(skip)]


def test_ip6_table_takes_the_network_s_name_and_its_rules() -> None:
    table = names_for_prefix("/example.net/blue").table
    script = render_ruleset(DUAL.family_part(IP6), table, family=IP6)
    assert script.startswith(f"table ip6 {table}\ndelete table ip6 {table}\ntable ip6 {table} {{\n")
    assert "elements = { 2001:db8::12 }" in script
    assert rules(script) == [
        "udp dport 8472 @th,96,24 0x2 ip6 saddr != @vxlan_peers update @vxlan_dropped { ip6 saddr }",
        "udp dport 8472 @th,96,24 0x2 ip6 saddr != @vxlan_peers counter drop",
        "meta mark & 0x00004000 == 0x00004000 return",
        "ip6 saddr 2001:db8:19::/48 ip6 daddr 2001:db8:19::/48 return",
        "ip6 saddr 2001:db8:19::/48 ip6 daddr != ff00::/8 masquerade fully-random",
        "ip6 saddr != 2001:db8:19::/48 ip6 daddr 2001:db8:19:9::/64 return",
        "ip6 saddr != 2001:db8:19::/48 ip6 daddr 2001:db8:19::/48 masquerade fully-random",
        "ip6 saddr 2001:db8:19::/48 accept",
        "ip6 daddr 2001:db8:19::/48 accept",
    ]


def test_sealed_underlay_and_fully_random_off_hold_for_ip6() -> None:
    spec = replace(DUAL, ingress_allowlist=False, sealed_underlay="eth0", masq_fully_random=False)
    lines = rules(render_ruleset(spec.family_part(IP6), family=IP6))
    assert lines[0] == "meta mark & 0x00004000 == 0x00004000 return"
    assert lines[5] == ('iifname "eth0" ip6 daddr 2001:db8:19::/48 ct state != { established, related } '
                        "ct status ! dnat counter drop")
    assert not any("fully-random" in line for line in lines)
