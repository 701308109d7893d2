"""``overlayd bench --only families``: IPv6 against IPv4, a dual-stack network's IPv6 half and an
IPv6-only network, in one run.

Three one-host labs, built one after the other on the same machine, one per ``Family``: an
IPv4-only network, a dual-stack one and an IPv6-only one (``EnableIPv4`` false; both on an
underlay with IPv6), each with ``--peers`` fake peer leases of its family. Each is cold-started
``--runs`` times, then ``--events`` new peers are put one at a time: the IPv4 figures time a
peer's three IPv4 entries, the others its three IPv6 entries on ``flannel-v6.1`` (a dual-stack
peer's IPv4 ones are waited for as well). The IPv4-only run is the baseline of every ratio.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any

from overlayd.bench import control
from overlayd.bench.peers import MAX_PEER_INDEX, Family, network_config, put_peers
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
    family: Family,
) -> dict[str, Any]:
    """Cold starts and event latency at ``args.peers`` in a lab of a ``family`` network."""
    lab = Lab(name=random_lab_name(), root=root, agent_args=agent_args, ipv6=family.has_ipv6)
    results["labs"].append(lab)
    print(f"lab {lab.name}: {family.value} network, {args.peers} peers", flush=True)
    lab.up(hosts=1, network_config=network_config(family), start_agents=False)
    host = lab.hosts[0]
    with etcd_client(host) as client:
        put_peers(client, range(1, args.peers + 1), family)
        colds = [control.cold_start(lab, host, args.peers, args.cold_timeout, family).programmed
                 for _ in range(args.runs)]  # fmt: skip
        print(f"  cold starts: {', '.join(fmt_seconds(c) for c in colds)}", flush=True)
        event_ids = list(range(MAX_PEER_INDEX, MAX_PEER_INDEX - args.events, -1))
        events = control.event_latency(client, event_ids, args.event_gap, family=family)
    lab.down()
    results["labs"].remove(lab)
    return {"cold": colds, "events": events.reaction, "missed": events.missed}


# What each family's rows compare with IPv4-only: the cold start's entries, the timed entries.
_COMPARED = {
    Family.DUAL: ("dual-stack (both families)", "IPv6 half's entries"),
    Family.IPV6_ONLY: ("IPv6-only", "IPv6-only peer's entries"),
}


def family_rows(peers: int, measured: dict[Family, dict[str, Any]]) -> list[Row]:
    """Each other family's figures beside the IPv4-only ones as their baseline."""
    ipv4 = measured[Family.IPV4]
    rows = []
    for family, (cold, event) in _COMPARED.items():
        other = measured[family]
        rows.append(Row(
            f"cold start, {peers} peers, all entries: {cold} vs IPv4-only, median",
            fmt_seconds(median(other["cold"])), fmt_seconds(median(ipv4["cold"])),
            fmt_ratio(median(other["cold"]), median(ipv4["cold"])), GOAL,
        ))  # fmt: skip
        for p in (50, 95):
            v6, v4 = percentile(other["events"], p), percentile(ipv4["events"], p)
            rows.append(Row(f"event latency, {peers} peers: {event} vs IPv4's, p{p}",
                            fmt_seconds(v6), fmt_seconds(v4), fmt_ratio(v6, v4), GOAL))  # fmt: skip
    if any(figures["missed"] for figures in measured.values()):
        names = " / ".join(family.value for family in measured)
        missed = " / ".join(str(figures["missed"]) for figures in measured.values())
        rows.append(Row(f"events not seen within 10 s ({names})", missed))
    return rows
