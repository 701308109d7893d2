"""``overlayd status``: how this host (and with ``--cluster`` every host) looks, from four sources.

subnet.env, the kernel, the agent's /metrics and etcd are read independently, so one source
being down (the agent stopped, etcd unreachable) still leaves the others to look at; each
unreadable source says why. Gathering (I/O) is separate from the pure parsing and formatting.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.etcd.api import SubnetRegistry
from overlayd.netfilter.names import names_for_prefix
from overlayd.ops.devicestatus import DeviceView, read_device
from overlayd.ops.reachview import Reachability, fetch_peers, read_views, render_cluster, render_peers
from overlayd.options import AgentOptions
from overlayd.subnet.config import ConfigError, NetworkConfig, parse_network_config
from overlayd.subnet.healthview import NodeView, broken_pairs
from overlayd.subnet.lease import Lease, is_ipv6_only
from overlayd.subnet.subnetenv import parse_keys


@dataclass(frozen=True)
class AgentView:
    """What the agent's /metrics said (None: that metric was not exported)."""

    ready: bool | None = None
    version: str | None = None
    subnet: str | None = None
    lease_expiry: float | None = None  # unix time
    peers_known: float | None = None
    peers_programmed: float | None = None
    last_reconcile: float | None = None  # unix time
    reconcile_errors: float | None = None
    repairs: dict[str, float] = field(default_factory=dict)  # kind -> total
    etcd_errors: float | None = None
    watch_up: bool | None = None
    vxlan_dropped_sources: float | None = None  # addresses without a lease, last 10 minutes
    config_mismatch: bool | None = None  # the config in etcd would renumber live leases
    config_mismatch_leases: float | None = None  # how many live leases it does not hand out


@dataclass(frozen=True)
class LeaseView:
    """One lease in etcd and whether this host routes to its subnet."""

    subnet: str | None  # None: an IPv6-only lease (flannel's ``0.0.0.0-0&...`` key), IPv6 alone
    public_ip: str | None
    vtep_mac: str | None
    ttl: float | None  # seconds left; None: unknown, inf: a reservation
    programmed: bool | None = None  # route present here (both families'); None for our own subnet
    ipv6_subnet: str | None = None  # a dual-stack or IPv6-only lease's IPv6 half
    public_ipv6: str | None = None
    vtep_mac_v6: str | None = None


@dataclass(frozen=True)
class HostStatus:
    """Everything ``status`` gathered; each ``*_error`` says why that source is missing."""

    subnet_file: str
    subnet_env: dict[str, str] | None = None
    subnet_env_error: str | None = None
    device: DeviceView | None = None
    device_error: str | None = None
    metrics_address: str | None = None
    agent: AgentView | None = None
    agent_error: str | None = None
    etcd_endpoints: tuple[str, ...] = ()
    own_lease: LeaseView | None = None
    leases: tuple[LeaseView, ...] | None = None  # every lease, with --cluster
    etcd_error: str | None = None
    reach: Reachability | None = None  # this node's probes of its peers (the agent's /peers)
    reach_error: str | None = None
    views: dict[str, NodeView] | None = None  # every node's stored data path view, with --cluster
    view_problems: tuple[str, ...] = ()
    # This network's firewall objects, named from --etcd-prefix: "ip <table>, iptables <chain>"
    # (with "ip6 <table>" between them where subnet.env has an IPv6 subnet).
    firewall: str = ""

    @property
    def nothing_read(self) -> bool:
        """True when every source failed: there is nothing to show but the reasons."""
        return None not in (self.subnet_env_error, self.device_error, self.agent_error, self.etcd_error)

    @property
    def agent_down(self) -> str | None:
        """Why the agent is not serving (unreachable, or not ready), for a scripted check; None
        when it is ready, or when its metrics are off and there is no telling."""
        if self.agent is not None:
            return None if self.agent.ready is not False else "the agent is not ready (see /readyz)"
        return self.agent_error if self.metrics_address else None


# ---- pure: parsing ---------------------------------------------------------------------------


def parse_metrics(text: str) -> AgentView:
    """Pick the figures ``status`` shows out of a /metrics exposition."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))

    def value(name: str) -> float | None:
        found = samples.get(name)
        return sum(v for _, v in found) if found else None

    def label(name: str, key: str) -> str | None:
        found = samples.get(name)
        return found[0][0].get(key) if found else None

    repairs: dict[str, float] = {}
    for labels, count in samples.get("overlayd_repairs_total", []):
        kind = labels.get("kind", "?")
        repairs[kind] = repairs.get(kind, 0.0) + count
    ready, watch_up = value("overlayd_ready"), value("overlayd_etcd_watch_up")
    mismatch = value("overlayd_config_mismatch")
    return AgentView(
        ready=None if ready is None else ready == 1,
        version=label("overlayd_build_info", "version"),
        subnet=label("overlayd_lease_info", "subnet"),
        lease_expiry=value("overlayd_lease_expiry_timestamp_seconds"),
        peers_known=value("overlayd_peers_known"),
        peers_programmed=value("overlayd_peers_programmed"),
        last_reconcile=value("overlayd_last_reconcile_timestamp_seconds"),
        reconcile_errors=value("overlayd_reconcile_errors_total"),
        repairs=repairs,
        etcd_errors=value("overlayd_etcd_errors_total"),
        watch_up=None if watch_up is None else watch_up == 1,
        vxlan_dropped_sources=value("overlayd_vxlan_ingress_dropped_sources"),
        config_mismatch=None if mismatch is None else mismatch == 1,
        config_mismatch_leases=value("overlayd_config_mismatch_leases"),
    )


def overlay_network(subnet_env: Mapping[str, str] | None) -> IPv4Network | None:
    """The whole overlay from subnet.env's FLANNEL_NETWORK (its first one, if several)."""
    raw = (subnet_env or {}).get("FLANNEL_NETWORK", "").split(",")[0]
    try:
        return IPv4Network(raw) if raw else None
    except ValueError:
        return None


def own_subnet(subnet_env: Mapping[str, str] | None) -> IPv4Network | IPv6Network | None:
    """This host's subnet from subnet.env's FLANNEL_SUBNET (``198.18.7.1/24`` → 198.18.7.0/24);
    in an IPv6-only network, which has none, from FLANNEL_IPV6_SUBNET."""
    env = subnet_env or {}
    raw, parse = env.get("FLANNEL_SUBNET"), IPv4Interface
    if not raw and "FLANNEL_NETWORK" not in env:
        raw, parse = env.get("FLANNEL_IPV6_SUBNET"), IPv6Interface  # type: ignore[assignment]
    try:
        return parse(raw).network if raw else None
    except ValueError:
        return None


def redact_endpoint(endpoint: str) -> str:
    """An etcd URL without any ``user:password@`` part, safe to print."""
    parts = urlsplit(endpoint)
    if parts.hostname is None or "@" not in parts.netloc:
        return endpoint
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host))


# ---- pure: formatting ------------------------------------------------------------------------


def _json_number(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def to_json(status: HostStatus) -> dict[str, Any]:
    """The machine view: every gathered field; infinite TTLs (reservations) become null."""
    data = asdict(status)
    for lease in [data["own_lease"], *(data["leases"] or [])]:
        if lease is not None:
            lease["reservation"] = lease["ttl"] is not None and math.isinf(lease["ttl"])
            lease["ttl"] = _json_number(lease["ttl"])
    data["etcd_endpoints"] = list(status.etcd_endpoints)
    if status.views is not None:
        pairs = broken_pairs(status.views)
        data["broken_pairs"] = [
            {"source": pair.source, "target": pair.target, "families": list(pair.families)} for pair in pairs
        ]
    return data


def _duration(seconds: float) -> str:
    """``3s``, ``4m05s``, ``23h59m``: short and exact enough for an operator."""
    if math.isinf(seconds):
        return "never (reservation)"
    seconds = int(seconds)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds}s"
    if seconds < 3600:
        return f"{sign}{seconds // 60}m{seconds % 60:02d}s"
    return f"{sign}{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _agent_line(agent: AgentView, now: float) -> str:
    parts = ["ready" if agent.ready else "NOT READY" if agent.ready is False else "readiness unknown"]
    if agent.lease_expiry == 0:  # the gauge before any lease is held
        parts.append("no lease yet")
    elif agent.lease_expiry is not None:
        parts.append(f"lease expires in {_duration(agent.lease_expiry - now)}")
    parts.append(f"peers {_count(agent.peers_programmed)} programmed / {_count(agent.peers_known)} known")
    if agent.last_reconcile:
        parts.append(f"last reconcile {_duration(now - agent.last_reconcile)} ago")
    repairs = ", ".join(f"{kind} {count:g}" for kind, count in sorted(agent.repairs.items()) if count)
    parts.append(f"repairs: {repairs or 'none'}")
    if agent.watch_up is False:
        parts.append("etcd watch DOWN")
    if agent.vxlan_dropped_sources:
        parts.append(f"VXLAN DROPPED from {agent.vxlan_dropped_sources:g} address(es) without a lease "
                     "in the last 10 minutes (the agent log names them)")
    if agent.config_mismatch:
        parts.append(f"CONFIG MISMATCH: the network config in etcd does not hand out "
                     f"{_count(agent.config_mismatch_leases)} live lease(s), so the agent keeps the one in "
                     "force; put it back, or restart the agents of the nodes outside to renumber them "
                     "(/readyz and the agent log say which)")  # fmt: skip
    return "; ".join(parts)


def _lease_line(lease: LeaseView) -> str:
    ttl = "ttl ?" if lease.ttl is None else f"ttl {_duration(lease.ttl)}"
    if lease.subnet is None:  # IPv6-only
        return f"{lease.ipv6_subnet} public {lease.public_ipv6 or '-'} vtep {lease.vtep_mac_v6 or '-'} {ttl}"
    ipv6 = f" ipv6 {lease.ipv6_subnet} public {lease.public_ipv6 or '-'}" if lease.ipv6_subnet else ""
    return f"{lease.subnet} public {lease.public_ip} vtep {lease.vtep_mac or '-'}{ipv6} {ttl}"


def _lease_row(lease: LeaseView, dual: bool) -> tuple[str, ...]:
    """A cluster table row: an IPv6-only lease's IPv6 subnet, PublicIPv6 and MAC in place of
    the IPv4 ones (all of them, in an IPv6-only network)."""
    if lease.subnet is None:
        subnets = ("-", lease.ipv6_subnet or "-") if dual else (lease.ipv6_subnet or "-",)
        where = (lease.public_ipv6 or "-", lease.vtep_mac_v6 or "-")
    else:
        subnets = (lease.subnet, lease.ipv6_subnet or "-") if dual else (lease.subnet,)
        where = (lease.public_ip or "-", lease.vtep_mac or "-")
    return (
        *subnets,
        *where,
        "?" if lease.ttl is None else _duration(lease.ttl),
        "this host" if lease.programmed is None else "yes" if lease.programmed else "MISSING",
    )


def _table(rows: Iterable[tuple[str, ...]]) -> list[str]:
    rows = list(rows)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def render_text(status: HostStatus, now: float) -> str:
    """The human view: one line per source, then the cluster table when leases were listed."""
    lines = ["this host"]
    if status.subnet_env is not None:
        env = " ".join(f"{k}={v}" for k, v in status.subnet_env.items())
        lines.append(f"  subnet.env  {status.subnet_file}: {env}")
    else:
        lines.append(f"  subnet.env  {status.subnet_env_error}")
    if status.device is not None:
        dev = status.device
        also = f" and {dev.ipv6_name}" if dev.ipv6_name else ""
        lines.append(
            f"  device      {dev.name} mtu {dev.mtu} mac {dev.mac}{also}: {len(dev.routes)} routes, "
            f"{dev.neighbours} neighbours, {dev.fdb_entries} fdb entries"
            + (f", {dev.tunnel_peers} tunnel peers" if dev.tunnel_peers else "")
        )
    else:
        lines.append(f"  device      {status.device_error}")
    if status.agent is not None:
        version = f" (overlayd {status.agent.version})" if status.agent.version else ""
        lines.append(f"  agent       {status.metrics_address}{version}: {_agent_line(status.agent, now)}")
    else:
        lines.append(f"  agent       {status.agent_error}")
    if status.reach is not None:
        lines += render_peers(status.reach, now)
    elif status.reach_error:
        lines.append(f"  data path   {status.reach_error}")
    if status.own_lease is not None:
        lines.append(f"  etcd lease  {_lease_line(status.own_lease)}")
    else:
        lines.append(f"  etcd lease  {status.etcd_error or 'none found for this host'}")
    if status.firewall:
        lines.append(f"  firewall    nftables table {status.firewall}")
    if status.leases is not None:
        lines += ["", f"cluster ({len(status.leases)} leases in etcd)"]
        v6_only = bool(status.leases) and all(lease.subnet is None for lease in status.leases)
        dual = not v6_only and any(lease.ipv6_subnet for lease in status.leases)
        subnets = ("IPV6 SUBNET",) if v6_only else ("SUBNET", "IPV6 SUBNET") if dual else ("SUBNET",)
        header = (*subnets, "PUBLIC IPV6" if v6_only else "PUBLIC IP", "VTEP MAC", "TTL", "ROUTE HERE")
        lines += _table([header, *(_lease_row(lease, dual) for lease in status.leases)])
    if status.views is not None:
        lines += render_cluster(status.views, list(status.view_problems), now)
    return "\n".join(lines)


# ---- I/O: gathering --------------------------------------------------------------------------


def read_subnet_env(path: Path) -> tuple[dict[str, str] | None, str | None]:
    try:
        return parse_keys(path.read_text()), None
    except OSError as exc:
        return None, f"{path}: {exc.strerror}; is the agent running with --subnet-file={path}?"


def scrape_metrics(address: str, timeout: float = 3.0) -> tuple[AgentView | None, str | None]:
    url = f"http://{address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_metrics(response.read().decode()), None
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"agent unreachable at {url} ({reason}); is it running with --metrics-address={address}?"
    except ValueError as exc:
        return None, f"{url} did not return Prometheus text ({exc})"


def _lease_view(lease: Lease, ttl: float | None, routes: frozenset[str] | None, own: bool) -> LeaseView:
    subnet6 = str(lease.ipv6_subnet) if lease.ipv6_subnet is not None else None
    v6_only = is_ipv6_only(lease)
    # Its IPv6 route is looked for where this host routes IPv6 peers at all (a dual-stack host).
    dual_here = routes is not None and any(":" in route for route in routes)
    if v6_only:
        wanted = {subnet6}
    else:
        wanted = {str(lease.subnet), subnet6} if subnet6 and dual_here else {str(lease.subnet)}
    return LeaseView(
        subnet=None if v6_only else str(lease.subnet),
        public_ip=None if v6_only else str(lease.attrs.public_ip),
        vtep_mac=lease.attrs.vtep_mac,
        ttl=ttl,
        programmed=None if own or routes is None else wanted <= routes,
        ipv6_subnet=subnet6,
        public_ipv6=str(lease.attrs.public_ipv6) if lease.attrs.public_ipv6 else None,
        vtep_mac_v6=lease.attrs.vtep_mac_v6,
    )


def _config(raw_config: bytes | None) -> NetworkConfig | None:
    """A readable config; None (look for any device of the default backend) when missing or invalid."""
    if raw_config is None:
        return None
    try:
        return parse_network_config(raw_config, backends=CONFIG_PARSERS)
    except ConfigError:
        return None  # the agent's log names the problem; `overlayd config get` shows it


def lease_views(
    registry: SubnetRegistry,
    found: list[Lease],
    subnet: IPv4Network | IPv6Network | None,
    routes: frozenset[str] | None,
    cluster: bool,
) -> tuple[LeaseView | None, tuple[LeaseView, ...] | None]:
    """Our lease (the one named by ``subnet``, subnet.env's), and every lease when ``cluster``,
    each with its TTL read from etcd; IPv4 subnets first, then IPv6-only ones."""
    mine = own_leases(found, subnet)
    own = _lease_view(mine[0], registry.lease_remaining(mine[0]), routes, own=True) if mine else None
    if not cluster:
        return own, None
    leases = tuple(
        _lease_view(lease, registry.lease_remaining(lease), routes, own=lease.own_subnet == subnet)
        for lease in sorted(found, key=lambda lease: (lease.own_subnet.version, lease.own_subnet))
    )
    return own, leases


def own_leases(found: Iterable[Lease], subnet: IPv4Network | IPv6Network | None) -> list[Lease]:
    """The leases named by our ``subnet``: by their IPv6 subnet where they are IPv6-only."""
    return [lease for lease in found if subnet is not None and lease.own_subnet == subnet]


def gather(options: AgentOptions, metrics_address: str | None, cluster: bool) -> HostStatus:
    """Read every source; a failing source is recorded as an error, never raised."""
    from overlayd.etcd.registry import Registry, RegistryError

    subnet_env, subnet_env_error = read_subnet_env(options.subnet_file)
    subnet = own_subnet(subnet_env)
    reach: Reachability | None = None
    reach_error: str | None = None
    if metrics_address:
        agent, agent_error = scrape_metrics(metrics_address)
        if agent is not None:
            reach, reach_error = fetch_peers(metrics_address)
    else:
        agent, agent_error = None, "metrics server is off (--metrics-address=off); no agent figures"
    views: dict[str, NodeView] | None = None
    view_problems: list[str] = []
    registry = Registry(replace(options.etcd_settings(), timeout=3.0))
    own: LeaseView | None = None
    leases: tuple[LeaseView, ...] | None = None
    etcd_error: str | None = None
    try:
        try:
            config = _config(registry.get_config()[0])
            found: list[Lease] | None = registry.list_leases()[0]
        except RegistryError as exc:
            config, found, etcd_error = None, None, str(exc)
        mine = own_leases(found or (), subnet)
        public_ip = str(mine[0].public_address) if mine else None
        v6_only = subnet is not None and subnet.version == 6  # subnet.env has no IPv4 lines
        device, device_error = read_device(config, overlay_network(subnet_env), public_ip, v6_only)
        if found is not None:
            routes = frozenset(device.routes) if device else None
            try:
                own, leases = lease_views(registry, found, subnet, routes, cluster)
                if cluster:
                    views, view_problems = read_views(registry)
            except RegistryError as exc:
                etcd_error = str(exc)
    finally:
        registry.close()
    return HostStatus(
        subnet_file=str(options.subnet_file),
        subnet_env=subnet_env,
        subnet_env_error=subnet_env_error,
        device=device,
        device_error=device_error,
        metrics_address=metrics_address,
        agent=agent,
        agent_error=agent_error,
        etcd_endpoints=tuple(redact_endpoint(e) for e in options.etcd_endpoints),
        own_lease=own,
        leases=leases,
        etcd_error=etcd_error,
        reach=reach,
        reach_error=reach_error,
        views=views,
        view_problems=tuple(view_problems),
        firewall=firewall_names(options.etcd_prefix, subnet_env),
    )


def firewall_names(prefix: str, subnet_env: Mapping[str, str] | None) -> str:
    """This network's nftables tables and iptables chain, by the families subnet.env has: the
    ``ip`` table and the chain for IPv4, the ``ip6`` table for IPv6 (an IPv6-only network's
    rules are the ``ip6`` table's alone)."""
    names, env = names_for_prefix(prefix), subnet_env or {}
    ipv6, ipv4 = (
        bool(env.get("FLANNEL_IPV6_SUBNET")),
        bool(env.get("FLANNEL_SUBNET")) or "FLANNEL_NETWORK" in env,
    )
    parts = [f"ip {names.table}"] if ipv4 or not ipv6 else []
    parts += [f"ip6 {names.table}"] if ipv6 else []
    parts += [f"iptables chain {names.forward_chain}"] if ipv4 or not ipv6 else []
    return ", ".join(parts)
