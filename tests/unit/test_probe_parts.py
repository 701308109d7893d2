"""The probe's packets, the node's stored view, the status lines and the chart: pure parts."""

from __future__ import annotations

import json
import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from overlayd.agent.icmp import (
    ECHO_REPLY_V6,
    checksum,
    echo_reply_filter,
    echo_request,
    echo_request_v6,
    parse_reply,
    parse_reply_v6,
)
from overlayd.agent.probefeed import snapshot_json
from overlayd.agent.prober import ReachSnapshot, ViewPublisher
from overlayd.agent.reach import Family, PathReach, PeerReach, ProbeBudget, ProbeSchedule, Reach
from overlayd.bench.svgplot import Mark, Series, step_chart
from overlayd.etcd.memory import ManualClock, MemoryEtcd, MemoryRegistry
from overlayd.ops.reachview import parse_peers, render_cluster, render_peers
from overlayd.subnet.healthview import NodeView, ViewError, broken_pairs, decode_view, encode_view


def test_an_echo_request_checksums_to_zero_and_a_reply_is_parsed_from_its_ip_packet() -> None:
    request = echo_request(0x1234, 7)
    assert checksum(request) == 0
    reply = bytes([0]) + request[1:]
    ip = bytes([0x45, 0, 0, 20 + len(reply)]) + bytes(8) + IPv4Address("198.18.7.0").packed + bytes(4)
    parsed = parse_reply(ip + reply)
    assert parsed is not None and (parsed.source, parsed.ident, parsed.sequence) == (
        IPv4Address("198.18.7.0"), 0x1234, 7)
    assert parse_reply(ip + request) is None, "a request is no reply"
    assert parse_reply(b"\x45" + bytes(10)) is None
    assert struct.unpack("!H", request[4:6])[0] == 0x1234


def test_an_icmpv6_echo_request_leaves_its_checksum_to_the_kernel_and_a_reply_is_parsed() -> None:
    request = echo_request_v6(0x1234, 7)
    assert request[:2] == bytes([128, 0]) and request[2:4] == b"\x00\x00"  # the kernel fills it in
    assert struct.unpack("!HH", request[4:8]) == (0x1234, 7)
    reply = bytes([ECHO_REPLY_V6]) + request[1:]
    parsed = parse_reply_v6(reply, "2001:db8:1000:2e::", 12.5)
    assert parsed is not None and (parsed.source, parsed.ident, parsed.sequence, parsed.received) == (
        IPv6Address("2001:db8:1000:2e::"), 0x1234, 7, 12.5)
    scoped = parse_reply_v6(reply, "fe80::1%eth0")
    assert scoped is not None and scoped.source == IPv6Address("fe80::1"), "a scope is no part of the address"
    assert parse_reply_v6(request, "2001:db8::1") is None, "a request is no reply"
    assert parse_reply_v6(bytes([135, 0]) + bytes(22), "fe80::1") is None, "neighbour solicitation"
    assert parse_reply_v6(reply[:6], "2001:db8::1") is None, "truncated"


def test_the_icmpv6_filter_passes_echo_replies_alone() -> None:
    words = struct.unpack("8I", echo_reply_filter())
    # As <netinet/icmp6.h>'s ICMP6_FILTER_WILLPASS reads it: a type passes when its bit is clear.
    passing = [kind for kind in range(256) if not words[kind >> 5] & (1 << (kind & 31))]
    assert passing == [ECHO_REPLY_V6]


def test_a_view_round_trips_and_a_bad_one_names_the_node() -> None:
    view = NodeView("198.18.1.0-24", 2, ("198.18.3.0-24",), 1000.0)
    assert decode_view(view.node, encode_view(view)) == view
    with pytest.raises(ViewError, match=r"198\.18\.1\.0-24"):
        decode_view("198.18.1.0-24", b'{"unreachable": "all"}')
    views = {"a": NodeView("a", 1, ("b",), 0), "b": NodeView("b", 1, ("a",), 0), "c": NodeView("c", 2, (), 0)}
    assert [(p.source, p.target) for p in broken_pairs(views)] == [("a", "b"), ("b", "a")]


def test_the_view_is_written_when_it_changes_and_before_its_ttl_not_on_every_step() -> None:
    store = MemoryEtcd(ManualClock())
    registry = MemoryRegistry(store, "/net")
    publisher = ViewPublisher(registry, ttl=100, background=False)
    publisher.step("198.18.1.0-24", 2, [], 0.0)
    first = store.revision
    publisher.step("198.18.1.0-24", 2, [], 10.0)
    assert store.revision == first, "unchanged: not rewritten"
    publisher.step("198.18.1.0-24", 2, ["198.18.2.0-24"], 20.0)
    assert store.revision == first + 1
    stored = registry.list_health()["198.18.1.0-24"]
    assert decode_view("198.18.1.0-24", stored).unreachable == ("198.18.2.0-24",)
    publisher.step("198.18.1.0-24", 2, ["198.18.2.0-24"], 71.0)
    assert store.revision == first + 2, "rewritten halfway through its TTL"
    store.set_unreachable(True)
    publisher.step("198.18.1.0-24", 2, [], 80.0)  # fails quietly, retried later
    store.set_unreachable(False)
    publisher.step("198.18.1.0-24", 2, [], 95.0)
    assert decode_view("198.18.1.0-24", registry.list_health()["198.18.1.0-24"]).unreachable == ()


def test_peers_json_and_status_lines_name_the_unreachable_peer() -> None:
    peers = (PeerReach("198.18.2.0-24", "198.18.2.0", Reach.REACHABLE, 900.0, 0.0004, 0),
             PeerReach("198.18.3.0-24", "198.18.3.0", Reach.UNREACHABLE, 950.0, None, 4))  # fmt: skip
    reach = parse_peers(snapshot_json(ReachSnapshot(peers, 1, 20.0, 5.0)))
    assert json.loads(snapshot_json(ReachSnapshot(peers, 1, 20.0, 5.0)))["unreachable"] == 1
    text = "\n".join(render_peers(reach, 1000.0))
    assert "1 of 2 peers answer" in text and "198.18.3.0-24" in text and "UNREACHABLE for 50s" in text
    views = {"198.18.1.0-24": NodeView("198.18.1.0-24", 2, ("198.18.3.0-24",), 990.0),
             "198.18.3.0-24": NodeView("198.18.3.0-24", 2, (), 990.0)}  # fmt: skip
    lines = render_cluster(views, [], 1000.0)
    matrix = "\n".join(lines)
    assert "198.18.1.0-24 cannot reach 198.18.3.0-24" in matrix and " X" in matrix
    header, first = lines[2], lines[3]
    assert header.index("2") == first.index("X"), "column 2 of row 1 is under its number"


def test_a_dual_stack_peer_failing_over_ipv6_is_named_with_its_family_in_peers_json_and_status() -> None:
    key = "198.18.3.0-24&2001:db8:1000:3::-64"
    paths = (PathReach(Family.IPV4, "198.18.3.0", Reach.REACHABLE, 900.0, 0.0004, 0),
             PathReach(Family.IPV6, "2001:db8:1000:3::", Reach.UNREACHABLE, 950.0, None, 3))  # fmt: skip
    failing = PeerReach(key, "2001:db8:1000:3::", Reach.UNREACHABLE, 950.0, None, 3, (Family.IPV6,), paths)
    answering = tuple(PathReach(p.family, p.target, Reach.REACHABLE, 900.0, 0.0004, 0) for p in paths)
    fine = PeerReach("198.18.2.0-24&2001:db8:1000:2::-64", "198.18.2.0", Reach.REACHABLE, 900.0, 0.0004, 0,
                     (), answering)
    body = snapshot_json(ReachSnapshot((fine, failing), 1, 20.0, 5.0))
    served = {peer["key"]: peer for peer in json.loads(body)["peers"]}
    assert served[key]["failing"] == ["ipv6"] and served[key]["state"] == "unreachable"
    families = [(p["family"], p["state"]) for p in served[key]["paths"]]
    assert families == [("ipv4", "reachable"), ("ipv6", "unreachable")]
    text = "\n".join(render_peers(parse_peers(body), 1000.0))
    assert "1 of 2 peers answer through the overlay over IPv4 and IPv6" in text, text
    assert "each family probed every 5s" in text, text
    assert f"{key:<20} 2001:db8:1000:3::" in text and "UNREACHABLE over IPv6 for 50s" in text, text


def test_a_transition_is_logged_once_naming_its_family(caplog: pytest.LogCaptureFixture) -> None:
    from overlayd.agent.prober import ProbeTargets, log_transition
    from overlayd.agent.reach import ProbeBudget, Transition

    key, target = "198.18.3.0-24&2001:db8:1000:3::-64", IPv6Address("2001:db8:1000:3::")
    targets = ProbeTargets("198.18.1.0-24", {key: (IPv4Address("198.18.3.0"), target)}, frozenset({key}),
                           "UDP port 8472 blocked")  # fmt: skip
    with caplog.at_level("WARNING"):
        log_transition(Transition(key, target, Reach.UNREACHABLE, Reach.REACHABLE, 3), targets, ProbeBudget())
        log_transition(Transition(key, target, Reach.REACHABLE, Reach.UNREACHABLE, 0), targets, ProbeBudget())
    lost, back = (record.getMessage() for record in caplog.records)
    assert f"peer {key} unreachable through the overlay over IPv6: 3 probes in a row to {target}" in lost
    assert "UDP port 8472 blocked" in lost
    assert back == f"peer {key} answers through the overlay again over IPv6 (probe to {target})"


def test_the_chart_is_an_svg_with_a_line_per_series_and_the_marks() -> None:
    svg = step_chart("t", [Series("a", ((0.0, 0.0), (5.0, 1.0))), Series("b", ((0.0, 1.0),))],
                     [Mark(2.0, "fault")], "count")  # fmt: skip
    assert svg.startswith("<svg") and svg.count("<path") == 2 and "fault" in svg
    with pytest.raises(ValueError):
        step_chart("t", [], [], "count")


@pytest.mark.parametrize("raw", ["-1", "5000", "fast"])
def test_a_bad_probe_rate_names_the_value_and_the_range(raw: str, capsys: pytest.CaptureFixture[str]) -> None:
    from overlayd.cli import main

    assert main(["run", f"--probe-rate={raw}", "--etcd-endpoints=http://192.0.2.2:2379"]) == 2
    err = capsys.readouterr().err
    assert "--probe-rate" in err and raw in err, err
    assert raw == "fast" or "between 0 (probing off) and 1000" in err, err


def test_the_probe_target_is_the_peers_first_address_unless_the_backend_names_another() -> None:
    from overlayd.backend.api import probe_targets
    from overlayd.backend.select import DEFAULT_TYPE, backend_for
    from overlayd.subnet.lease import Lease, LeaseAttrs

    peer = Lease(subnet=IPv4Network("198.18.7.0/24"), attrs=LeaseAttrs(public_ip=IPv4Address("192.0.2.12"),
                                                                      vtep_mac="02:00:00:00:07:01"))
    default = backend_for(DEFAULT_TYPE)
    try:
        assert probe_targets(default, peer) == (IPv4Address("198.18.7.0"),)  # on the peer's VXLAN device
    finally:
        default.close()

    class Quiet:  # a backend that routes no traffic is not probed
        routes_traffic = False

    class Gateway:  # one whose peers answer on their bridge gateway
        routes_traffic = True

        def probe_targets(self, lease: Lease, ipv6: bool) -> tuple[IPv4Address, ...]:
            return (lease.subnet.network_address + 1,)

    assert probe_targets(Quiet(), peer) == ()  # type: ignore[arg-type]
    assert probe_targets(Gateway(), peer) == (IPv4Address("198.18.7.1"),)  # type: ignore[arg-type]
    for name in ("alloc", "host-gw"):
        backend = backend_for(name)
        try:
            assert probe_targets(backend, peer) == () and probe_targets(backend, peer, ipv6=True) == (), name
        finally:
            backend.close()


def test_a_dual_stack_peer_is_probed_on_the_first_address_of_each_subnet_the_backend_carries() -> None:
    from dataclasses import replace

    from overlayd.backend.api import probe_targets
    from overlayd.backend.desired import ipv6_entries_for
    from overlayd.backend.plane import Neigh
    from overlayd.backend.select import backend_for
    from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs

    attrs = LeaseAttrs(public_ip=IPv4Address("192.0.2.12"), backend_type="vxlan", vni=1,
                       vtep_mac="02:00:00:00:07:01", public_ipv6=IPv6Address("2001:db8::12"),
                       vtep_mac_v6="02:00:00:00:07:02")  # fmt: skip
    subnet6 = IPv6Network("2001:db8:1000:7::/64")
    dual = Lease(IPv4Network("198.18.7.0/24"), attrs, subnet6)
    v4, v6 = IPv4Address("198.18.7.0"), IPv6Address("2001:db8:1000:7::")
    [neigh] = [entry for entry in ipv6_entries_for(dual) if isinstance(entry, Neigh)]
    assert neigh.ip == v6, "the IPv6 target is the gateway of the peer's IPv6 neighbour entry"
    ipv6_only = Lease(NO_IPV4_SUBNET, replace(attrs, public_ip=NO_PUBLIC_IP), subnet6)
    half = Lease(IPv4Network("198.18.7.0/24"), replace(attrs, public_ipv6=None), subnet6)
    vxlan, wireguard, udp = backend_for("vxlan"), backend_for("wireguard"), backend_for("udp")
    try:
        assert probe_targets(vxlan, dual, ipv6=True) == (v4, v6)
        assert probe_targets(vxlan, dual, ipv6=False) == (v4,), "an IPv4-only network probes IPv4 alone"
        assert probe_targets(vxlan, ipv6_only, ipv6=True) == (v6,), "no IPv4 subnet: IPv6 alone"
        assert probe_targets(vxlan, half, ipv6=True) == (v4,), "no PublicIPv6: IPv6 not programmed"
        assert probe_targets(wireguard, dual, ipv6=True) == (v4,), "wireguard carries IPv4 alone"
        assert probe_targets(udp, dual, ipv6=True) == (v4,), "udp carries IPv4 alone"
    finally:
        for backend in (vxlan, wireguard, udp):
            backend.close()


def test_the_cluster_view_names_the_family_a_dual_stack_pair_fails_over() -> None:
    a, b, c = "198.18.1.0-24&2001:db8:1000:1::-64", "198.18.2.0-24&2001:db8:1000:2::-64", "198.18.3.0-24"
    partial = NodeView(a, 2, (b, c), 990.0, ((b, ("ipv6",)),))
    assert decode_view(a, encode_view(partial)) == partial
    # A view stored by an older agent has no "partial": every pair counts as broken over any family.
    assert decode_view(a, b'{"probed":2,"unreachable":["x"],"written":1.0}').partial == ()
    with pytest.raises(ViewError, match="partial is not a map"):
        decode_view(a, b'{"probed":2,"unreachable":[],"written":1.0,"partial":{"x":"ipv6"}}')
    views = {a: partial, b: NodeView(b, 2, (), 990.0), c: NodeView(c, 2, (), 990.0)}
    assert [(p.target, p.families) for p in broken_pairs(views)] == [(b, ("ipv6",)), (c, ())]
    text = "\n".join(render_cluster(views, [], 1000.0))
    assert f"{a} cannot reach {b} over ipv6" in text and f"{a} cannot reach {c}\n" in text + "\n"
    row = next(line for line in text.splitlines() if line.strip().startswith(a) and " 1 " in line)
    assert row.split()[-3:] == ["-", "6", "X"]


def test_the_schedule_tells_peers_failing_over_one_family_from_those_failing_over_all() -> None:
    schedule = ProbeSchedule(ProbeBudget(rate=100.0, misses=1))
    dual = (IPv4Address("198.18.2.0"), IPv6Address("2001:db8:1000:2::"))
    schedule.set_targets({"dual": dual, "v4": (IPv4Address("198.18.3.0"),)}, 0.0, 0.0)
    schedule.lost("dual", dual[1], 1.0, 1.0)
    schedule.lost("v4", IPv4Address("198.18.3.0"), 1.0, 1.0)
    assert schedule.unreachable() == ["dual", "v4"]
    assert schedule.partly_unreachable() == {"dual": ("ipv6",)}
