"""The rules this host's firewall should hold, from the network config, our lease and the options
(pure: the reconciler's firewall step writes them)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from overlayd.backend.api import UnderlayIngress
from overlayd.netfilter.rules import FirewallSpec, IngressGuard
from overlayd.options import AgentOptions
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease, serves_ipv6

PeerSources = Callable[[], frozenset[IPv4Address | IPv6Address]]


def firewall_spec(
    config: NetworkConfig,
    lease: Lease,
    options: AgentOptions,
    ingress: UnderlayIngress | None,
    peer_sources: PeerSources | None,
    sealed_underlay: str | None = None,
) -> FirewallSpec:
    """The ``FirewallSpec`` of ``config`` for our ``lease``; ``peer_sources`` (None before the first
    peer listing) gives the PublicIPs the ingress allowlist admits; ``sealed_underlay``: the
    interface new connections into the Network may not arrive on (the backend's tunnel seals it)."""
    allowlist = options.vxlan_ingress_allowlist
    # Until the first listing, keep the live allowlist: a restart drops no peer traffic.
    # Without an allowlist the set is not rendered: no pass over every lease for it.
    sources = (peer_sources() if peer_sources else None) if allowlist else frozenset()
    dual = serves_ipv6(config, lease)
    v4 = config.ipv4 is not None
    return FirewallSpec(
        network=config.ipv4.network if v4 else None,  # type: ignore[union-attr, arg-type]
        own_subnet=lease.subnet if v4 else None,
        ip_masq=options.ip_masq,
        forward_rules=options.iptables_forward_rules,
        ingress_allowlist=allowlist,
        ingress=(IngressGuard(ingress.protocol, ingress.port, ingress.name, ingress.network_field,
                              ingress.ipv6_port) if ingress else None),
        ingress_sources=sources,
        sealed_underlay=sealed_underlay,
        ipv6_network=config.ipv6.network if dual else None,  # type: ignore[union-attr,arg-type]
        ipv6_own_subnet=lease.ipv6_subnet if dual else None,
        masq_fully_random=not options.ip_masq_fully_random_disable,
    )
