"""A real agent's /metrics, /readyz and sd_notify move with what happens to the host and etcd."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from labtools import needs_lab, wait_for

from overlayd.lab.namespaces import Lab, sh

pytestmark = [needs_lab, pytest.mark.root]


def test_a_joining_host_raises_peers_known_and_programmed(lab: Lab) -> None:
    h1 = lab.hosts[0]
    assert lab.metric(h1, "overlayd_peers_known") == 2
    assert lab.metric(h1, "overlayd_peers_programmed") == 2
    assert lab.metric(h1, "overlayd_subnet_pool_size") == 255  # 198.18.1.0 .. 198.18.255.0 as /24s
    assert lab.metric(h1, "overlayd_ready") == 1
    assert lab.metric(h1, "overlayd_etcd_relists_total", reason="start") == 1
    # A new host's first peer snapshot holds its own new lease: acquired once, not lost and again.
    assert lab.metric(h1, "overlayd_lease_acquisitions_total") == 1
    h4 = lab.add_host()
    lab.wait_converged(timeout=30)
    assert lab.metric(h4, "overlayd_lease_acquisitions_total") == 1
    wait_for(lambda: lab.metric(h1, "overlayd_peers_programmed") == 3, 10, "h1 to program the new peer")
    assert lab.metric(h1, "overlayd_peers_known") == 3
    assert lab.metric(h1, "overlayd_subnet_leases") == 4
    assert lab.metric(h1, "overlayd_peer_events_total", kind="put") >= 1
    assert lab.metric(h1, "overlayd_peer_event_apply_seconds_count") >= 1


def test_a_deleted_route_counts_as_a_repair_and_programming_does_not(lab: Lab) -> None:
    h1, h2 = lab.hosts[0], lab.hosts[1]
    # Start-up and the join above programmed routes; none of that is drift.
    assert lab.metric(h1, "overlayd_repairs_total", kind="route") == 0
    assert lab.metric(h1, "overlayd_repairs_total", kind="device") == 0
    passes = lab.metric(h1, "overlayd_reconciles_total", trigger="timer")
    peer = h2.flannel_address()
    sh("ip", "route", "del", f"{peer}/24", netns=h1.netns)
    wait_for(
        lambda: lab.metric(h1, "overlayd_repairs_total", kind="route", action="add") == 1,
        10,
        "the route repair to be counted",
    )
    assert lab.metric(h1, "overlayd_repairs_total", kind="route", action="remove") == 0
    wait_for(
        lambda: lab.metric(h1, "overlayd_reconciles_total", trigger="timer") > passes, 10, "a timer pass"
    )
    assert lab.metric(h1, "overlayd_last_reconcile_timestamp_seconds") > 0


def test_etcd_down_counts_errors_and_stays_ready(lab: Lab) -> None:
    h1, h2 = lab.hosts[0], lab.hosts[1]
    errors = lab.metric(h1, "overlayd_etcd_errors_total")
    assert lab.metric(h1, "overlayd_etcd_watch_up") == 1
    lab.stop_etcd()
    try:
        wait_for(lambda: lab.metric(h1, "overlayd_etcd_watch_up") == 0, 15, "watch_up to drop")
        wait_for(lambda: lab.metric(h1, "overlayd_etcd_errors_total") > errors, 15, "etcd errors to count")
        assert lab.metric(h1, "overlayd_etcd_errors_total", operation="watch") >= 1
        assert lab.metric(h1, "overlayd_etcd_watch_restarts_total") >= 1
        status, body = lab.http_get(h1, "/readyz")
        assert status == 200, body
        assert "etcd unreachable" in body
        assert lab.http_get(h1, "/healthz")[0] == 200
        assert lab.ping(h1, h2.flannel_address() or "", count=2), "the data path must survive etcd"
    finally:
        lab.start_etcd()
    wait_for(lambda: lab.metric(h1, "overlayd_etcd_watch_up") == 1, 30, "the watch to come back")
    assert lab.metric(h1, "overlayd_etcd_relists_total", reason="error") >= 1
    status, body = lab.http_get(h1, "/readyz")
    assert (status, body) == (200, "ready\n")


def test_sd_notify_ready_watchdog_and_stopping(lab: Lab, tmp_path: Path) -> None:
    host = lab.add_host(start_agent=False)
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(1.0)
    messages: list[str] = []

    def saw(field: str) -> bool:
        with contextlib.suppress(TimeoutError):
            messages.extend(listener.recv(4096).decode().splitlines())
        return field in messages

    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
    with host.log_file.open("ab") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, *lab.agent_command(host)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip
    host.pid = process.pid  # lab.down() stops it even if this test fails
    lab.save()
    try:
        wait_for(lambda: saw("READY=1"), 30, "READY=1 from the agent")
        status = [m for m in messages if m.startswith("STATUS=holding subnet")]
        assert status, messages
        assert lab.http_get(host, "/readyz")[0] == 200, "READY=1 before /readyz says ready"
        wait_for(lambda: saw("WATCHDOG=1"), 10, "a watchdog ping")
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: saw("STOPPING=1"), 10, "STOPPING=1 on SIGTERM")
        assert process.wait(timeout=10) == 0
    finally:
        lab.stop_agent(host)
        listener.close()
