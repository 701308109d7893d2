"""A dual-stack network's IPv6 data path is probed too: every peer answers over both families, and an
nft rule in one host's namespace dropping only the IPv6 underlay traffic from another (its IPv4
overlay untouched, every kernel entry right) turns that peer unreachable over IPv6 alone, in
/metrics, /peers, the log and ``overlayd status``; its removal turns it back. An IPv6-only
network's peers are probed on their IPv6 address alone."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator

import pytest
from faults import subnet_key
from labtools import log_mark, log_since, needs_lab, running_lab, status_json, wait_for

from overlayd.lab.hosts import LAB_IPV6_NETWORK, lab_network_config
from overlayd.lab.namespaces import Lab, LabHost, sh

pytestmark = [needs_lab, pytest.mark.root]
GOAL = 30.0  # seconds from the fault (or its removal) to the report, as tests/e2e/test_probe.py's


@pytest.fixture(scope="module")
def dual_probe_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    config = lab_network_config(ipv6=True)
    with running_lab(tmp_path_factory, hosts=3, ipv6=True, network_config=config) as lab:
        yield lab


def peer_paths(lab: Lab, host: LabHost) -> dict[str, dict[str, str]]:
    """``host``'s peers by their IPv4 key part (198.18.7.0-24): each family's state."""
    status, body = lab.http_get(host, "/peers")
    assert status == 200, body
    return {peer["key"].split("&")[0]: {path["family"]: path["state"] for path in peer["paths"]}
            for peer in json.loads(body)["peers"]}  # fmt: skip


@contextlib.contextmanager
def ipv6_udp_dropped(host: LabHost, source: LabHost) -> Iterator[None]:
    """``host`` drops every UDP packet from ``source``'s IPv6 underlay address (its IPv6 overlay's
    VXLAN), its IPv4 traffic untouched, until the block ends."""
    table = ("ip6", "probe6_fault")
    sh("nft", "add", "table", *table, netns=host.netns)
    try:
        hook = "{ type filter hook input priority -400 ; }"
        sh("nft", "add", "chain", *table, "input", hook, netns=host.netns)
        match = ("ip6", "saddr", source.ipv6, "meta", "l4proto", "udp")
        sh("nft", "add", "rule", *table, "input", *match, "drop", netns=host.netns)
        yield
    finally:
        sh("nft", "delete", "table", *table, netns=host.netns)


def unreachable(lab: Lab, host: LabHost, family: str = "") -> float:
    if family:
        return lab.metric(host, "overlayd_peers_unreachable_by_family", family=family)
    return lab.metric(host, "overlayd_peers_unreachable")


def test_a_peers_ipv6_dropped_is_reported_for_ipv6_alone_then_its_recovery(dual_probe_lab: Lab) -> None:
    lab = dual_probe_lab
    h1, h2, h3 = lab.hosts
    k2, k3 = subnet_key(h2), subnet_key(h3)
    both = {"ipv4": "reachable", "ipv6": "reachable"}
    wait_for(lambda: peer_paths(lab, h1) == {k2: both, k3: both}, GOAL, "h1 to hear from both over both")
    mark = log_mark(h1)
    with ipv6_udp_dropped(h2, h1):  # h1's IPv6 overlay packets never reach h2; IPv4 ones do
        wait_for(lambda: unreachable(lab, h1) == 1, GOAL, "h1 to see h2 unreachable")
        assert peer_paths(lab, h1) == {k2: {"ipv4": "reachable", "ipv6": "unreachable"}, k3: both}
        assert unreachable(lab, h1, "ipv6") == 1 and unreachable(lab, h1, "ipv4") == 0
        _, body = lab.http_get(h1, "/peers")
        [served] = [peer for peer in json.loads(body)["peers"] if peer["key"].startswith(f"{k2}&")]
        assert served["state"] == "unreachable" and served["failing"] == ["ipv6"]
        assert served["target"] == h2.flannel_ipv6_address(), "the first address of its IPv6 subnet"
        line = "unreachable through the overlay"
        logged = wait_for(lambda: line in log_since(h1, mark) and log_since(h1, mark), 5, "the log line")
        [told] = [text for text in str(logged).splitlines() if line in text]
        assert k2 in told and "over IPv6" in told, told
        served_peers = status_json(lab, h1)["reach"]["peers"]
        states = {(p["key"].split("&")[0], p["state"], tuple(p["failing"])) for p in served_peers}
        assert states == {(k2, "unreachable", ("ipv6",)), (k3, "reachable", ())}
        text = sh(sys.executable, "-m", "overlayd", "status", f"--etcd-endpoints={lab.etcd_endpoint}",
                  f"--subnet-file={h1.subnet_file}", netns=h1.netns)  # fmt: skip
        assert "UNREACHABLE over IPv6" in text and "over IPv4 and IPv6" in text, text
        assert unreachable(lab, h3) == 0
        # The view h1 stores in etcd names the family too: `status --cluster` says which.
        cluster = lambda: sh(sys.executable, "-m", "overlayd", "status", "--cluster",  # noqa: E731
                             f"--etcd-endpoints={lab.etcd_endpoint}", f"--subnet-file={h1.subnet_file}",
                             netns=h1.netns)  # fmt: skip
        told = wait_for(lambda: " over ipv6" in cluster() and cluster(), GOAL, "the stored view to name IPv6")
        assert f"cannot reach {k2}&" in str(told) and " over ipv6" in str(told), told
    wait_for(lambda: unreachable(lab, h1) == 0, GOAL, "h1 to report h2 back")
    assert peer_paths(lab, h1) == {k2: both, k3: both}
    assert unreachable(lab, h1, "ipv6") == 0
    assert "answers through the overlay again over IPv6" in log_since(h1, mark)


def test_an_ipv6_only_networks_peers_are_probed_on_their_ipv6_address_alone(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    config = json.dumps({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": LAB_IPV6_NETWORK,
                         "Backend": {"Type": "vxlan"}})  # fmt: skip
    with running_lab(tmp_path_factory, hosts=2, ipv6=True, network_config=config, converge=False) as lab:
        h1, h2 = lab.hosts

        def h2_seen_from_h1() -> dict | None:
            try:
                status, body = lab.http_get(h1, "/peers")
            except Exception:  # the agent is not serving yet
                return None
            peers = json.loads(body)["peers"] if status == 200 else []
            return peers[0] if len(peers) == 1 and peers[0]["state"] == "reachable" else None

        peer = wait_for(h2_seen_from_h1, 60, "h1 to hear from h2 over IPv6")
        assert isinstance(peer, dict) and peer["key"].startswith("0.0.0.0-0&"), peer
        assert [path["family"] for path in peer["paths"]] == ["ipv6"], peer
        assert peer["target"] == h2.flannel_ipv6_address(), "the first address of its IPv6 subnet"
