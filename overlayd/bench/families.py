"""``overlayd bench --only families``: a dual-stack network's IPv6 half against IPv4, in one run.

Two one-host labs, built one after the other on the same machine: an IPv4-only network, then a
dual-stack one (IPv6 on the underlay), each with ``--peers`` fake peer leases (dual-stack ones in
the second). Each is cold-started ``--runs`` times, then ``--events`` new peers are put one at a
time: the IPv4 figures time a peer's three IPv4 entries, the dual-stack ones its three IPv6
entries (its IPv4 ones are waited for as well). The IPv4-only run is the baseline of the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any

from overlayd.bench import control
from overlayd.bench.peers import MAX_PEER_INDEX, network_config, put_peers
from overlayd.bench.stats import Row, fmt_ratio, fmt_seconds, median, percentile
from overlayd.lab.hosts import LabHost
from overlayd.lab.namespaces import Lab, random_lab_name

GOAL = "within 10 % of IPv4"


def measure_family(
    args: argparse.Namespace,
    root: str,
    results: dict,
    agent_args: list[str],
    etcd_client: Callable[[LabHost], contextlib.AbstractContextManager[Any]],
    ipv6: bool,
) -> dict[str, Any]:
    """Cold starts and event latency at ``args.peers`` in a lab of one family (``ipv6``: dual-stack)."""
    lab = Lab(name=random_lab_name(), root=root, agent_args=agent_args, ipv6=ipv6)
    results["labs"].append(lab)
    what = "dual-stack" if ipv6 else "IPv4-only"
    print(f"lab {lab.name}: {what} network, {args.peers} peers", flush=True)
    lab.up(hosts=1, network_config=network_config(ipv6=ipv6), start_agents=False)
    host = lab.hosts[0]
    with etcd_client(host) as client:
        put_peers(client, range(1, args.peers + 1), ipv6=ipv6)
        colds = [control.cold_start(lab, host, args.peers, args.cold_timeout, ipv6).programmed
                 for _ in range(args.runs)]  # fmt: skip
        print(f"  cold starts: {', '.join(fmt_seconds(c) for c in colds)}", flush=True)
        event_ids = list(range(MAX_PEER_INDEX, MAX_PEER_INDEX - args.events, -1))
        events = control.event_latency(client, event_ids, args.event_gap, ipv6=ipv6)
    lab.down()
    results["labs"].remove(lab)
    return {"cold": colds, "events": events.reaction, "missed": events.missed}


def family_rows(peers: int, ipv4: dict[str, Any], dual: dict[str, Any]) -> list[Row]:
    """The dual-stack figures beside the IPv4-only ones as their baseline."""
    rows = [
        Row(
            f"cold start, {peers} peers, all entries: dual-stack (both families) vs IPv4-only, median",
            fmt_seconds(median(dual["cold"])), fmt_seconds(median(ipv4["cold"])),
            fmt_ratio(median(dual["cold"]), median(ipv4["cold"])), GOAL,
        ),
    ]  # fmt: skip
    for p in (50, 95):
        v6, v4 = percentile(dual["events"], p), percentile(ipv4["events"], p)
        rows.append(Row(f"event latency, {peers} peers: IPv6 half's entries vs IPv4's, p{p}",
                        fmt_seconds(v6), fmt_seconds(v4), fmt_ratio(v6, v4), GOAL))  # fmt: skip
    if ipv4["missed"] or dual["missed"]:
        missed = f"{ipv4['missed']} / {dual['missed']}"
        rows.append(Row("events not seen within 10 s (IPv4-only / dual-stack)", missed))
    return rows
