"""Whether a lab network's agents have converged: each running host routes to every other's subnet
(both families where both hosts serve IPv6), for backends that write routes at all."""

from __future__ import annotations

import json

from overlayd.backend.select import BACKENDS, CONFIG_PARSERS
from overlayd.lab.hosts import DEFAULT_NETWORK_CONFIG, LabHost
from overlayd.lab.shell import sh
from overlayd.subnet.config import ConfigError, parse_network_config


def routes_traffic(network_config: str) -> bool:
    """Whether the backend ``network_config`` names writes a route to every peer (True when the
    config cannot be read: its agents then never converge, and the wait says so)."""
    try:
        config = parse_network_config(network_config or DEFAULT_NETWORK_CONFIG, backends=CONFIG_PARSERS)
    except ConfigError:
        return True
    return BACKENDS[config.backend.type].routes_traffic


def missing_routes(hosts: list[LabHost], network_config: str, network: str | None = None) -> list[str]:
    """What is still missing among ``network``'s running ``hosts``: hosts without subnet.env, or
    without a route (other than the default) covering some peer's subnet, whatever device the
    backend routes it through (none for a backend that writes no routes: ``routes_traffic``)."""
    running = [host for host in hosts if host.agent_pid(network)]
    envs = {host.name: host.subnet_env(network) for host in running}
    subnets = {name: env.get("FLANNEL_SUBNET") for name, env in envs.items()}
    subnets6 = {name: env.get("FLANNEL_IPV6_SUBNET") for name, env in envs.items()}
    # An IPv6-only network's subnet.env has the IPv6 lines alone.
    missing = [f"{name} has no subnet.env" for name in envs if not subnets[name] and not subnets6[name]]
    if missing or not routes_traffic(network_config):
        return missing
    for host in running:
        for peer in running:
            peer4 = subnets[peer.name] if subnets[host.name] else None  # both serve IPv4
            if peer is not host and peer4 and not _routed(host, peer4.split("/")[0]):
                missing.append(f"{host.name} lacks a route to {peer.name}")
            peer6 = subnets6[peer.name] if subnets6[host.name] else None  # both serve IPv6
            if peer is not host and peer6 and not _routed(host, peer6.split("/")[0], "-6"):
                missing.append(f"{host.name} lacks an IPv6 route to {peer.name}")
    return missing


def _routed(host: LabHost, address: str, family: str = "-4") -> bool:
    out = sh("ip", family, "-j", "route", "show", "match", address, netns=host.netns, check=False)
    try:
        routes = json.loads(out or "[]")
    except ValueError:
        return False
    return any(route.get("dst") not in (None, "default") for route in routes)
