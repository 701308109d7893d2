"""A data path fault that leaves every kernel entry right is seen by the agents' probes: a drop rule
for one peer's UDP turns that peer unreachable in /metrics, /peers, the log and ``overlayd status``
(and in every node's view in etcd), and its removal turns it back. The goal is 30 s each way."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from faults import subnet_key, udp_dropped
from labtools import log_mark, log_since, needs_lab, running_lab, status_json, wait_for

from overlayd.lab.namespaces import Lab, LabHost, sh

pytestmark = [needs_lab, pytest.mark.root]
GOAL = 30.0  # seconds from the fault (or its removal) to the report


@pytest.fixture(scope="module")
def probe_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=3) as lab:
        yield lab


def peers(lab: Lab, host: LabHost) -> dict[str, str]:
    status, body = lab.http_get(host, "/peers")
    assert status == 200, body
    return {peer["key"]: peer["state"] for peer in json.loads(body)["peers"]}


def test_every_peer_answers_and_nothing_is_unreachable(probe_lab: Lab) -> None:
    lab = probe_lab
    h1 = lab.hosts[0]
    others = {subnet_key(host) for host in lab.hosts[1:]}
    wait_for(lambda: peers(lab, h1) == dict.fromkeys(others, "reachable"), GOAL, "h1 to hear from both peers")
    assert lab.metric(h1, "overlayd_peers_unreachable") == 0
    assert lab.metric(h1, "overlayd_probes_answered_total") >= 2
    assert lab.metric(h1, "overlayd_probe_rtt_seconds_count") >= 2


def test_a_peers_udp_dropped_is_reported_then_its_recovery(probe_lab: Lab) -> None:
    lab = probe_lab
    h1, h2, h3 = lab.hosts
    k1, k2, k3 = (subnet_key(host) for host in lab.hosts)
    wait_for(lambda: set(peers(lab, h1).values()) == {"reachable"}, GOAL, "every peer reachable first")
    mark = log_mark(h1)
    with udp_dropped(h2, h1):  # h1's overlay packets never reach h2; the kernel entries stay right
        wait_for(lambda: lab.metric(h1, "overlayd_peers_unreachable") == 1, GOAL, "h1 to see h2 unreachable")
        assert peers(lab, h1) == {k2: "unreachable", k3: "reachable"}
        line = "unreachable through the overlay"
        logged = wait_for(lambda: line in log_since(h1, mark) and log_since(h1, mark), 5, "the log line")
        assert k2 in logged and "kernel entries here are right" in logged and "UDP port 8472" in logged
        assert logged.count("unreachable through the overlay") == 1, "logged once, not per probe"
        status = status_json(lab, h1, "--cluster")
        states = {(p["key"], p["state"]) for p in status["reach"]["peers"]}
        assert states == {(k2, "unreachable"), (k3, "reachable")}
        # Each node stores its view: h1 cannot reach h2, and h2 (whose answers to h1 are dropped) not h1.
        wait_for(
            lambda: {(p["source"], p["target"]) for p in status_json(lab, h3, "--cluster")["broken_pairs"]}
            == {(k1, k2), (k2, k1)},
            GOAL, "both nodes' views in etcd",
        )  # fmt: skip
        text = sh(
            sys.executable, "-m", "overlayd", "status", "--cluster", f"--etcd-endpoints={lab.etcd_endpoint}",
            f"--subnet-file={h1.subnet_file}", netns=h1.netns,
        )  # fmt: skip
        assert f"{k1} cannot reach {k2}" in text and "UNREACHABLE" in text, text
        assert lab.metric(h3, "overlayd_peers_unreachable") == 0
    wait_for(lambda: lab.metric(h1, "overlayd_peers_unreachable") == 0, GOAL, "h1 to report h2 back")
    assert peers(lab, h1) == {k2: "reachable", k3: "reachable"}
    assert "answers through the overlay again" in log_since(h1, mark)
    wait_for(lambda: status_json(lab, h1, "--cluster")["broken_pairs"] == [], GOAL, "the views to clear")


def test_an_agent_started_while_etcd_is_down_does_not_blame_the_config(probe_lab: Lab) -> None:
    lab = probe_lab
    lab.stop_etcd()
    try:
        h4 = lab.add_host()

        def metrics() -> str:
            try:
                status, text = lab.http_get(h4, "/metrics")
            except Exception:  # the agent is not serving yet
                return ""
            return text if status == 200 else ""

        failed = 'overlayd_etcd_errors_total{operation="get_config"} 0.0'
        wait_for(lambda: failed.rsplit(" ", 1)[0] in metrics() and failed not in metrics(), 30,
                 "h4 to count a failed read of the config")  # fmt: skip
        assert "overlayd_network_config_ok NaN" in metrics(), "unknown, not 0: etcd never answered"
    finally:
        lab.start_etcd()
    wait_for(lambda: lab.metric(h4, "overlayd_network_config_ok") == 1, 60, "h4 to read the config")
    lab.wait_converged(timeout=60)
