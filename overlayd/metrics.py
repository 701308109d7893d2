"""Prometheus metrics and the /metrics, /healthz, /readyz HTTP endpoints.

The reconciler thread updates metrics and the Health snapshot; the HTTP threads only read them,
so a slow scrape never blocks programming the kernel.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)


@dataclass
class Health:
    """What /healthz and /readyz report; replaced whole by the reconciler (atomic reference)."""

    ready: bool = False
    reason: str = "starting"
    last_loop: float = 0.0  # time.monotonic() of the reconciler's last pass


class Metrics:
    """The agent's metrics, in a registry of its own so tests can run several agents."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.peers = Gauge("overlayd_peers", "Peer leases programmed on this host", registry=r)
        self.reconciles = Counter(
            "overlayd_reconciles", "Full reconcile passes", ["trigger"], registry=r
        )
        self.reconcile_errors = Counter(
            "overlayd_reconcile_errors", "Reconcile passes that failed", registry=r
        )
        self.reconcile_seconds = Histogram(
            "overlayd_reconcile_duration_seconds", "Duration of a full reconcile pass", registry=r
        )
        self.repairs = Counter(
            "overlayd_repairs",
            "Kernel entries a full reconcile had to add or remove (drift found)",
            ["kind", "action"],
            registry=r,
        )
        self.peer_events = Counter(
            "overlayd_peer_events", "Peer lease events applied from the etcd watch", ["kind"], registry=r
        )
        self.event_seconds = Histogram(
            "overlayd_peer_event_apply_seconds",
            "Time from receiving a peer lease event to its entries being programmed",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.watch_up = Gauge("overlayd_etcd_watch_up", "1 while the etcd lease watch is healthy", registry=r)
        self.lease_expiry = Gauge(
            "overlayd_lease_expiry_timestamp_seconds", "Unix time our subnet lease expires", registry=r
        )
        self.lease_acquisitions = Counter(
            "overlayd_lease_acquisitions", "Subnet leases acquired (start and re-acquire)", registry=r
        )
        self.lease_renewals = Counter("overlayd_lease_renewals", "Subnet lease renewals", registry=r)
        self.ready = Gauge("overlayd_ready", "1 when the data path is programmed", registry=r)
        self.info = Gauge(
            "overlayd_info", "This host's lease", ["subnet", "public_ip", "vtep_mac"], registry=r
        )
        self.health = Health()

    def set_info(self, subnet: str, public_ip: str, vtep_mac: str) -> None:
        self.info.clear()
        self.info.labels(subnet=subnet, public_ip=public_ip, vtep_mac=vtep_mac).set(1)


def _handler(metrics: Metrics, stale_after: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            health = metrics.health
            if self.path == "/metrics":
                self._reply(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                alive = time.monotonic() - health.last_loop < stale_after
                self._reply(200 if alive else 503, b"ok\n" if alive else b"reconciler stalled\n")
            elif self.path == "/readyz":
                self._reply(200 if health.ready else 503, f"{health.reason}\n".encode())
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _reply(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes are not state changes

    return Handler


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on a daemon thread."""

    def __init__(self, metrics: Metrics, host: str, port: int, stale_after: float) -> None:
        self.server = ThreadingHTTPServer((host, port), _handler(metrics, stale_after))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()
        log.info("serving /metrics, /healthz and /readyz on %s:%d", *self.server.server_address[:2])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
