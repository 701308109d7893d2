"""Prometheus metrics and the /metrics, /healthz, /readyz HTTP endpoints.

The reconciler thread updates metrics and the Health snapshot; the HTTP thread only reads them
(the snapshot is replaced whole, never locked), so a slow or hostile client never blocks
programming the kernel. The metric names are a contract with
``overlayd status`` and with dashboards: rename one only together with its readers.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from overlayd import __version__
from overlayd.agent.httpserve import BoundedHttpServer, Request, Response

log = logging.getLogger(__name__)
# A ``_created`` timestamp per counter doubles the exposition and no reader uses it.
disable_created_metrics()

# What a timer-, netlink- or SIGHUP-triggered pass can find drifted, and how it repairs each kind. Every
# pair is exported from the start (at 0), so a dashboard's rate() sees the first repair.
REPAIRS = {
    "route": ("add", "remove"),
    "neigh": ("add", "remove"),
    "fdb": ("add", "remove"),
    "direct_route": ("add", "remove"),
    "device": ("fix",),
    "firewall": ("fix",),
    "subnet_env": ("fix",),
    "blackhole_route": ("fix",),  # --ip-blackhole-route
}
# The label values each labelled counter can take, exported at 0 from the start: a counter without
# a series until its first increment shows "No data" on a healthy node, and rate() misses a burst.
KNOWN_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "etcd_errors": {"operation": (
        "get_config", "list_leases", "create_lease", "take_over", "renew", "lease_remaining", "watch",
        "put_health",
    )},
    "lease_acquire_failures": {"reason": ("etcd", "contention", "out_of_subnets")},
    "relists": {"reason": ("start", "error", "compaction")},
    "peer_events": {"kind": ("put", "delete")},
    "reconciles": {"trigger": ("lease", "resync", "event", "netlink", "timer", "sighup")},
    "pass_step_failures": {"step": ("firewall", "device", "entries")},
    "peers_unreachable_by_family": {"family": ("ipv4", "ipv6")},  # a gauge, at 0 from the start too
}  # fmt: skip
# Probe round trips through the overlay: a LAN answers in well under a millisecond, a continent in tens.
PROBE_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
Address = tuple[str, int]
# A scrape or probe sends its request at once and reads a small answer: seconds are plenty, and
# bound how long an idle local client can hold a connection.
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 256  # per listen address; a node has one scraper and a few probes


@dataclass(frozen=True)
class Health:
    """What /healthz and /readyz report; replaced whole by the reconciler (atomic reference)."""

    ready: bool = False
    reason: str = "starting"
    last_loop: float = 0.0  # time.monotonic() of the reconciler's last turn
    etcd_problem: str = ""  # why etcd is unreachable; "" while it answers
    config_problem: str = ""  # why the config in etcd is not the one in force; "" while it is


class Metrics:
    """The agent's metrics, in a registry of its own so tests can run several agents."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge("overlayd_build_info", "Agent version", ["version", "python"], registry=r)
        self.build_info.labels(version=__version__, python=platform.python_version()).set(1)
        self.ready = Gauge("overlayd_ready", "1 when the data path is programmed", registry=r)

        self.lease_info = Gauge(
            "overlayd_lease_info",
            "This host's lease",
            ["subnet", "public_ip", "vtep_mac", "network"],
            registry=r,
        )
        self.lease_ipv6_info = Gauge(
            "overlayd_lease_ipv6_info",
            "This host's lease's IPv6 half, in a dual-stack network (no sample otherwise)",
            ["subnet", "public_ipv6", "vtep_mac", "network"],
            registry=r,
        )
        self.lease_expiry = Gauge(
            "overlayd_lease_expiry_timestamp_seconds", "Unix time our subnet lease expires", registry=r
        )
        self.lease_renew = Gauge(
            "overlayd_lease_renew_timestamp_seconds", "Unix time the agent means to renew our subnet lease",
            registry=r,
        )
        self.lease_acquisitions = Counter(
            "overlayd_lease_acquisitions", "Subnet leases acquired (start and re-acquire)", registry=r
        )
        self.lease_renewals = Counter("overlayd_lease_renewals", "Subnet lease renewals", registry=r)
        self.lease_acquire_failures = Counter(
            "overlayd_lease_acquire_failures",
            "Attempts to acquire a subnet lease that failed, by reason",
            ["reason"],
            registry=r,
        )
        self.lease_renewal_failures = Counter(
            "overlayd_lease_renewal_failures",
            "Lease renewals that failed (etcd error, or our key gone)",
            registry=r,
        )

        self.peers_known = Gauge(
            "overlayd_peers_known", "VXLAN peer leases known from etcd", registry=r
        )
        self.peers_programmed = Gauge(
            "overlayd_peers_programmed",
            "Peers whose neighbour, FDB and route entries are in the kernel",
            registry=r,
        )
        self.peer_events = Counter(
            "overlayd_peer_events", "Peer lease events applied from the etcd watch", ["kind"], registry=r
        )
        self.peers_held = Gauge(
            "overlayd_peers_held",
            "Deleted peers whose entries are kept for the hold-down, in case their lease returns",
            registry=r,
        )
        self.peer_holds = Counter(
            "overlayd_peer_holds",
            "Holds of deleted peers that ended, by outcome (returned, replaced, removed)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("returned", "replaced", "removed"):
            self.peer_holds.labels(outcome=outcome)
        self.event_seconds = Histogram(
            "overlayd_peer_event_apply_seconds",
            "Time from receiving a peer lease event to its entries being programmed",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )

        self.reconciles = Counter(
            "overlayd_reconciles", "Full reconcile passes", ["trigger"], registry=r
        )
        self.reconcile_seconds = Histogram(
            "overlayd_reconcile_duration_seconds", "Duration of a full reconcile pass", registry=r
        )
        self.last_reconcile = Gauge(
            "overlayd_last_reconcile_timestamp_seconds",
            "Unix time the last full reconcile pass succeeded",
            registry=r,
        )
        self.reconcile_errors = Counter(
            "overlayd_reconcile_errors", "Reconcile passes that failed", registry=r
        )
        self.repairs = Counter(
            "overlayd_repairs",
            "Drift found and fixed by a timer-, netlink- or SIGHUP-triggered pass (not initial programming)",
            ["kind", "action"],
            registry=r,
        )
        for kind, actions in REPAIRS.items():
            for action in actions:
                self.repairs.labels(kind=kind, action=action)

        self.etcd_errors = Counter(
            "overlayd_etcd_errors", "Failed etcd operations", ["operation"], registry=r
        )
        self.watch_up = Gauge("overlayd_etcd_watch_up", "1 while the etcd lease watch is healthy", registry=r)
        self.watch_restarts = Counter(
            "overlayd_etcd_watch_restarts", "Times the etcd lease watch failed and was restarted", registry=r
        )
        self.relists = Counter(
            "overlayd_etcd_relists",
            "Full listings of the subnet leases (start, after compaction, after an error)",
            ["reason"],
            registry=r,
        )
        self.bad_leases = Counter(
            "overlayd_bad_leases",
            "Peer leases skipped as malformed or unsafe, once per key and revision",
            ["reason"],
            registry=r,
        )
        # A full pass's steps fail alone: one refused entry leaves the firewall and subnet.env repaired.
        self.pass_step_failures = Counter(
            "overlayd_reconcile_step_failures",
            "Full-pass steps that failed (firewall, device, entries, blackhole), retried on the next pass",
            ["step"],
            registry=r,
        )
        self.entry_failures = Counter(
            "overlayd_entry_failures", "Peer entries the kernel refused, counted on every pass", registry=r
        )
        self.entries_failing = Gauge(
            "overlayd_entries_failing", "Peer entries the kernel refused on the last pass", registry=r
        )

        self.pool_size = Gauge(
            "overlayd_subnet_pool_size", "Subnets between SubnetMin and SubnetMax", registry=r
        )
        self.subnet_leases = Gauge(
            "overlayd_subnet_leases", "Subnet leases in use cluster-wide", registry=r
        )
        self.config_ok = Gauge(
            "overlayd_network_config_ok",
            "0 while the network config in etcd is missing or invalid (the agent keeps the one it runs); "
            "NaN until etcd has answered",
            registry=r,
        )
        self.config_ok.set(float("nan"))  # an unreachable etcd says nothing about the config
        self.config_mismatch = Gauge(
            "overlayd_config_mismatch",
            "1 while the network config in etcd would renumber live leases: the agent keeps the one in force",
            registry=r,
        )
        self.config_mismatch_leases = Gauge(
            "overlayd_config_mismatch_leases",
            "Live leases (this host's included) that the network config in etcd does not hand out",
            registry=r,
        )
        self.vxlan_dropped_sources = Gauge(
            "overlayd_vxlan_ingress_dropped_sources",
            "Sources that hold no peer lease (nor did just before) whose VXLAN the allowlist dropped lately",
            registry=r,
        )
        self.peers_unreachable = Gauge(
            "overlayd_peers_unreachable",
            "Peers that did not answer the last probes through the overlay (overlayd status names them)",
            registry=r,
        )
        self.peers_unreachable_by_family = Gauge(
            "overlayd_peers_unreachable_by_family",
            "Peers whose overlay address of this family (ipv4, ipv6) did not answer the last probes",
            ["family"], registry=r,
        )  # fmt: skip
        self.probes_sent = Counter("overlayd_probes_sent", "Data path probes sent to peers", registry=r)
        self.probes_answered = Counter(
            "overlayd_probes_answered", "Data path probes a peer answered in time", registry=r
        )
        self.probes_lost = Counter(
            "overlayd_probes_lost", "Data path probes with no answer in time", registry=r
        )
        self.probe_rtt = Histogram(
            "overlayd_probe_rtt_seconds", "Round trip of answered data path probes", buckets=PROBE_BUCKETS,
            registry=r,
        )
        for attribute, labels in KNOWN_LABELS.items():
            counter = getattr(self, attribute)
            for name, values in labels.items():
                for value in values:
                    counter.labels(**{name: value})
        self.health = Health()
        self.reach: Callable[[], bytes] = lambda: b'{"peers": [], "problem": "not probing yet"}\n'

    def set_lease_info(self, subnet: str, public_ip: str, vtep_mac: str, network: str) -> None:
        self.lease_info.clear()
        self.lease_info.labels(subnet=subnet, public_ip=public_ip, vtep_mac=vtep_mac, network=network).set(1)

    def set_lease_ipv6_info(self, subnet: str, public_ipv6: str, vtep_mac: str, network: str) -> None:
        """The IPv6 half of our lease; an empty ``subnet``: there is none (IPv4 only)."""
        self.lease_ipv6_info.clear()
        if subnet:
            self.lease_ipv6_info.labels(subnet=subnet, public_ipv6=public_ipv6, vtep_mac=vtep_mac,
                                        network=network).set(1)  # fmt: skip


def listen_addresses(metrics_address: Address | None, healthz_ip: str, healthz_port: int) -> list[Address]:
    """Where to serve: ``--metrics-address`` and flanneld's ``--healthz-ip/--healthz-port``.

    Both may name the same port (a flanneld unit with ``--healthz-port=9464`` next to our default
    ``127.0.0.1:9464``): a wildcard or identical healthz address then covers the metrics one, so
    it is served once instead of failing to bind.
    """
    addresses = [metrics_address] if metrics_address else []
    if healthz_port:
        if metrics_address and metrics_address[1] == healthz_port and (
            healthz_ip in ("0.0.0.0", "::", "") or healthz_ip == metrics_address[0]
        ):
            addresses = []
        addresses.append((healthz_ip, healthz_port))
    return addresses


def _route(metrics: Metrics, stale_after: float) -> Callable[[Request], Response]:
    def route(request: Request) -> Response:
        health = metrics.health  # one read: the reconciler replaces the snapshot whole
        if request.path == "/metrics":
            return Response(HTTPStatus.OK, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
        if request.path == "/peers":
            return Response(HTTPStatus.OK, metrics.reach(), "application/json")
        if request.path == "/healthz":
            idle = time.monotonic() - health.last_loop
            if idle < stale_after:
                return Response(HTTPStatus.OK, b"ok\n")
            stalled = f"reconciler stalled: no turn for {idle:.0f}s\n"
            return Response(HTTPStatus.SERVICE_UNAVAILABLE, stalled.encode())
        if request.path == "/readyz":
            status = HTTPStatus.OK if health.ready else HTTPStatus.SERVICE_UNAVAILABLE
            return Response(status, f"{_readiness(health)}\n".encode())
        return Response(HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz, /readyz or /peers\n")

    return route


def _readiness(health: Health) -> str:
    """The /readyz body.

    Readiness means this host forwards overlay traffic, which the kernel does from state we
    already programmed: an etcd outage does not stop it (peers are repaired from memory), so
    readiness stays 200 and only the body says etcd is unreachable. Failing readiness here would
    make every node unready at once whenever etcd restarts. A config mismatch is the same: the
    lease and the data path in force keep containers talking, so only the body says that this node
    needs the config put back or a restart.
    """
    body = health.reason
    if health.ready and health.etcd_problem:
        body += f"; etcd unreachable ({health.etcd_problem}): data path served from memory"
    if health.ready and health.config_problem:
        body += f"; {health.config_problem}"
    return body


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on one address, from one daemon thread.

    Each connection gets ``REQUEST_TIMEOUT`` seconds for its request and answer, and at most
    ``MAX_CONNECTIONS`` are open (``httpserve``): no local client can hold the agent's threads,
    descriptors or time.
    """

    def __init__(
        self,
        metrics: Metrics,
        address: Address,
        stale_after: float,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        route = _route(metrics, stale_after)
        self.server = BoundedHttpServer(address, route, max_connections, request_timeout)

    @property
    def port(self) -> int:
        return self.server.address[1]

    def start(self) -> None:
        self.server.start()
        log.info("serving /metrics, /healthz and /readyz on %s port %d", *self.server.address)

    def stop(self) -> None:
        self.server.stop()
