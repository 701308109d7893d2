"""The probe's packets, the node's stored view, the status lines and the chart: pure parts."""

from __future__ import annotations

import json
import struct
from ipaddress import IPv4Address, IPv4Network

import pytest

from overlayd.agent.icmp import checksum, echo_request, parse_reply
from overlayd.agent.probefeed import snapshot_json
from overlayd.agent.prober import ReachSnapshot, ViewPublisher
from overlayd.agent.reach import PeerReach, Reach
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
    from overlayd.backend.api import probe_target
    from overlayd.backend.select import DEFAULT_TYPE, backend_for
    from overlayd.subnet.lease import Lease, LeaseAttrs

    peer = Lease(subnet=IPv4Network("198.18.7.0/24"), attrs=LeaseAttrs(public_ip=IPv4Address("192.0.2.12")))
    default = backend_for(DEFAULT_TYPE)
    try:
        assert probe_target(default, peer) == IPv4Address("198.18.7.0")  # on the peer's VXLAN device
    finally:
        default.close()

    class Quiet:  # a backend that routes no traffic is not probed
        routes_traffic = False

    class Gateway:  # one whose peers answer on their bridge gateway
        routes_traffic = True

        def probe_target(self, lease: Lease) -> IPv4Address | None:
            return lease.subnet.network_address + 1

    assert probe_target(Quiet(), peer) is None  # type: ignore[arg-type]
    assert probe_target(Gateway(), peer) == IPv4Address("198.18.7.1")  # type: ignore[arg-type]
    for name in ("alloc", "host-gw"):
        backend = backend_for(name)
        try:
            assert probe_target(backend, peer) is None, name
        finally:
            backend.close()
