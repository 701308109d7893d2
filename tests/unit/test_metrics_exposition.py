"""The /metrics names other tools read, where the HTTP server listens, and what it answers."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from importlib import metadata

import pytest
from prometheus_client import generate_latest

from overlayd.agent.metrics import Health, Metrics, MetricsServer, listen_addresses

# The contract with `overlayd status` and dashboards (see docs): exactly these names.
CONTRACT = [
    "overlayd_build_info",
    "overlayd_lease_info",
    "overlayd_lease_expiry_timestamp_seconds",
    "overlayd_lease_acquisitions_total",
    "overlayd_lease_renewals_total",
    "overlayd_lease_renewal_failures_total",
    "overlayd_peers_known",
    "overlayd_peers_programmed",
    "overlayd_peer_events_total",
    "overlayd_peer_event_apply_seconds",
    "overlayd_reconciles_total",
    "overlayd_reconcile_duration_seconds",
    "overlayd_last_reconcile_timestamp_seconds",
    "overlayd_reconcile_errors_total",
    "overlayd_repairs_total",
    "overlayd_etcd_errors_total",
    "overlayd_etcd_watch_up",
    "overlayd_etcd_watch_restarts_total",
    "overlayd_etcd_relists_total",
    "overlayd_subnet_pool_size",
    "overlayd_subnet_leases",
    "overlayd_ready",
]


def test_every_contract_name_is_exported_once() -> None:
    text = generate_latest(Metrics().registry).decode()
    helped = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert set(CONTRACT) <= set(helped), set(CONTRACT) - set(helped)
    assert len(helped) == len(set(helped))
    # Renamed: no reader may find the old name with a different meaning.
    assert not {"overlayd_info", "overlayd_peers"} & set(helped)
    assert not [name for name in helped if name.endswith("_created")], "_created series are noise"


def test_labels_and_initial_series() -> None:
    metrics = Metrics()
    metrics.set_lease_info("198.18.5.0/24", "192.0.2.11", "02:00:00:00:00:01", "198.18.0.0/16")
    metrics.set_lease_info("198.18.6.0/24", "192.0.2.11", "02:00:00:00:00:01", "198.18.0.0/16")
    text = generate_latest(metrics.registry).decode()
    assert f'version="{metadata.version("overlayd")}"' in text, "build info carries the installed version"
    assert text.count("overlayd_lease_info{") == 1, "a new lease replaces the old series"
    assert 'subnet="198.18.6.0/24"' in text and 'network="198.18.0.0/16"' in text
    # Repairs start at 0 for every kind, so the first one shows up as a rate.
    for kind in ("route", "neigh", "fdb"):
        assert f'overlayd_repairs_total{{action="add",kind="{kind}"}} 0.0' in text
    for kind in ("device", "firewall", "subnet_env"):
        assert f'overlayd_repairs_total{{action="fix",kind="{kind}"}} 0.0' in text
    # So do the other labelled counters, for their known values: a panel shows 0, not "No data".
    for series in ('overlayd_etcd_errors_total{operation="watch"} 0.0',
                   'overlayd_etcd_errors_total{operation="renew"} 0.0',
                   'overlayd_lease_acquire_failures_total{reason="etcd"} 0.0',
                   'overlayd_reconciles_total{trigger="timer"} 0.0',
                   'overlayd_reconcile_step_failures_total{step="entries"} 0.0'):  # fmt: skip
        assert series in text
    # Unknown until etcd answers: an agent started while etcd is down does not blame the config.
    assert "overlayd_network_config_ok NaN" in text


def test_listen_addresses() -> None:
    default = ("127.0.0.1", 9464)
    assert listen_addresses(default, "0.0.0.0", 0) == [default]
    assert listen_addresses(None, "0.0.0.0", 0) == []
    assert listen_addresses(None, "0.0.0.0", 8080) == [("0.0.0.0", 8080)]
    assert listen_addresses(default, "192.0.2.11", 8080) == [default, ("192.0.2.11", 8080)]
    # flanneld's --healthz-port=9464 on the wildcard covers our default: one listener, not a bind error
    assert listen_addresses(default, "0.0.0.0", 9464) == [("0.0.0.0", 9464)]
    assert listen_addresses(default, "127.0.0.1", 9464) == [("127.0.0.1", 9464)]
    assert listen_addresses(default, "192.0.2.11", 9464) == [default, ("192.0.2.11", 9464)]


@pytest.fixture
def served() -> Iterator[tuple[Metrics, str]]:
    """A real server on an ephemeral loopback port."""
    metrics = Metrics()
    server = MetricsServer(metrics, ("127.0.0.1", 0), stale_after=60.0)
    server.start()
    try:
        yield metrics, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_endpoints(served: tuple[Metrics, str]) -> None:
    metrics, base = served
    metrics.health = Health(ready=False, reason="reading the network config", last_loop=time.monotonic())
    assert get(f"{base}/healthz") == (200, "ok\n")
    assert get(f"{base}/readyz") == (503, "reading the network config\n")
    metrics.health = replace(metrics.health, ready=True, reason="ready")
    assert get(f"{base}/readyz") == (200, "ready\n")
    # etcd down: the data path is served from memory, so still ready, and the body says why
    metrics.health = replace(metrics.health, etcd_problem="connection refused")
    status, body = get(f"{base}/readyz")
    assert status == 200 and "etcd unreachable (connection refused)" in body
    # a config mismatch: the lease and data path in force keep working, so ready, and it says why
    metrics.health = replace(metrics.health, etcd_problem="", config_problem="config mismatch: etcd's X")
    assert get(f"{base}/readyz") == (200, "ready; config mismatch: etcd's X\n")
    metrics.health = replace(metrics.health, ready=False, reason="acquiring a subnet lease")
    assert get(f"{base}/readyz") == (503, "acquiring a subnet lease\n")
    metrics.health = replace(metrics.health, ready=True, reason="ready", config_problem="")
    metrics.health = replace(metrics.health, last_loop=time.monotonic() - 120)
    status, body = get(f"{base}/healthz")
    assert status == 503 and body.startswith("reconciler stalled: no turn for 12")
    status, body = get(f"{base}/metrics")
    assert status == 200 and "overlayd_ready 0.0" in body
    assert get(f"{base}/nope")[0] == 404


def test_starting_does_not_look_up_the_listen_address_in_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*_args: object) -> str:
        raise AssertionError("reverse DNS lookup at start-up")

    monkeypatch.setattr(socket, "getfqdn", no_dns)
    server = MetricsServer(Metrics(), ("127.0.0.1", 0), stale_after=60.0)
    try:
        server.start()
        status, body = get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200 and "overlayd_build_info" in body
    finally:
        server.stop()
