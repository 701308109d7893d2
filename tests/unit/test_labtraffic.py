"""The traffic probes' parsers: ping loss and gaps, iperf3 reports."""

from __future__ import annotations

import json

from overlayd.lab.traffic import ping_stats, tcp_stats


def reply(seq: int) -> str:
    return f"[1.0] 64 bytes from 198.18.2.2: icmp_seq={seq} ttl=62 time=0.1 ms\n"


def test_ping_counts_missing_sequence_numbers_and_the_longest_gap() -> None:
    duplicate = reply(2).replace("ms", "ms (DUP!)")
    output = "PING 198.18.2.2\n" + "".join(reply(s) for s in (1, 2, 5, 6, 7, 9)) + duplicate
    stats = ping_stats(output, interval=0.05)
    assert (stats.sent, stats.received, stats.lost) == (9, 6, 3)
    assert abs(stats.longest_gap - 0.1) < 1e-9


def test_ping_without_replies_is_empty() -> None:
    assert ping_stats("From 192.0.2.1 icmp_seq=1 Destination Host Unreachable\n", 0.05).sent == 0


def test_iperf_report_and_garbage() -> None:
    report = {"intervals": [{"sum": {"bytes": 10}}, {"sum": {"bytes": 0}}],
              "end": {"sum_received": {"bytes": 10}, "sum_sent": {"retransmits": 2}}}  # fmt: skip
    stats = tcp_stats(json.dumps(report))
    assert (stats.error, stats.bytes_received, stats.retransmits, stats.stalled_seconds) == ("", 10, 2, 1)
    assert "no JSON" in tcp_stats("iperf3: error").error
