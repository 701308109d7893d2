"""Data path reachability for ``overlayd status``: this node's peers from the agent's ``/peers``,
and with ``--cluster`` every node's view from etcd, as a matrix or the broken pairs.

Parsing and formatting are pure; ``fetch_peers`` and ``read_views`` do the I/O.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from overlayd.subnet.healthview import NodeView, ViewError, broken_pairs, decode_view

MATRIX_MAX_NODES = 12  # a wider matrix no longer fits a terminal; larger clusters list broken pairs


@dataclass(frozen=True)
class PeerRow:
    key: str
    target: str
    state: str  # reachable, unreachable, unknown
    since: float  # unix time
    rtt: float | None  # seconds
    failing: tuple[str, ...] = ()  # the families whose probes go unanswered: ipv4, ipv6
    families: tuple[str, ...] = ()  # the families probed (none named by an agent older than IPv6 probes)

    def state_text(self) -> str:
        """Its state as a status line says it, naming the failing families: UNREACHABLE over IPv6."""
        if self.state != "unreachable":
            return self.state
        named = " and ".join(_FAMILY_TITLES.get(family, family) for family in self.failing)
        return f"UNREACHABLE over {named}" if named else "UNREACHABLE"


_FAMILY_TITLES = {"ipv4": "IPv4", "ipv6": "IPv6"}


@dataclass(frozen=True)
class Reachability:
    """This node's probes: every peer's verdict, or why there are none."""

    peers: tuple[PeerRow, ...] = ()
    period: float = 0.0
    problem: str = ""


def parse_peers(body: bytes) -> Reachability:
    """The agent's ``/peers`` answer; ValueError when it is not one."""
    data = json.loads(body)
    rows = tuple(
        PeerRow(str(p["key"]), str(p["target"]), str(p["state"]), float(p["since"]), p.get("rtt"),
                tuple(str(family) for family in p.get("failing", ())),
                tuple(str(path["family"]) for path in p.get("paths", ())))
        for p in data.get("peers", [])
    )  # fmt: skip
    return Reachability(rows, float(data.get("period", 0.0)), str(data.get("problem", "")))


def fetch_peers(address: str, timeout: float = 3.0) -> tuple[Reachability | None, str | None]:
    url = f"http://{address}/peers"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_peers(response.read()), None
    except urllib.error.HTTPError as exc:
        return None, f"{url}: HTTP {exc.code} (an agent older than the data path probes?)"
    except (OSError, urllib.error.URLError) as exc:
        return None, f"{url}: {getattr(exc, 'reason', exc)}"
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"{url} did not return the peers' reachability ({exc!r})"


def read_views(registry: Any) -> tuple[dict[str, NodeView], list[str]]:
    """Every node's stored view, and a line for each unreadable one (RegistryError propagates)."""
    views: dict[str, NodeView] = {}
    problems: list[str] = []
    for node, raw in registry.list_health().items():
        try:
            views[node] = decode_view(node, raw)
        except ViewError as exc:
            problems.append(str(exc))
    return views, problems


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


def render_peers(reach: Reachability, now: float) -> list[str]:
    """One line per peer that is not reachable, then a summary; every peer when there are few."""
    if reach.problem:
        return [f"  data path   {reach.problem}"]
    bad = [row for row in reach.peers if row.state != "reachable"]
    answered = [row.rtt for row in reach.peers if row.rtt is not None and row.state == "reachable"]
    worst = f", slowest round trip {max(answered) * 1000:.1f} ms" if answered else ""
    every = f"each probed every {reach.period:.0f}s" if reach.period and not math.isinf(reach.period) else ""
    families = sorted({family for row in reach.peers for family in row.families})
    over = " over " + " and ".join(_FAMILY_TITLES.get(f, f) for f in families) if len(families) > 1 else ""
    if over and every:  # each family's address is probed in its own turn
        every = every.replace("each probed", "each family probed")
    lines = [f"  data path   {len(reach.peers) - len(bad)} of {len(reach.peers)} peers answer through the "
             f"overlay{over}{worst}{'; ' + every if every else ''}"]  # fmt: skip
    shown = reach.peers if len(reach.peers) <= 10 else bad
    for row in shown:
        rtt = f" rtt {row.rtt * 1000:.1f} ms" if row.rtt is not None and row.state == "reachable" else ""
        since = _ago(now - row.since)
        lines.append(f"    {row.key:<20} {row.target:<16} {row.state_text()} for {since}{rtt}")
    return lines


def render_cluster(views: dict[str, NodeView], problems: list[str], now: float) -> list[str]:
    """Which node cannot reach which: a matrix for a few nodes, the broken pairs for many."""
    lines = ["", f"data path ({len(views)} nodes stored a view; each lists the peers it cannot reach)"]
    lines += [f"  {problem}" for problem in problems]
    if not views:
        return [*lines, "  no views stored yet (agents store theirs within seconds of starting)"]
    pairs = broken_pairs(views)
    nodes = sorted(views)
    if len(nodes) <= MATRIX_MAX_NODES:
        width = max(len(node) for node in nodes)
        lines.append(f"  {'':<{width}}     " + " ".join(f"{i + 1:>3}" for i in range(len(nodes))))
        for i, node in enumerate(nodes):
            unreachable, partial = set(views[node].unreachable), dict(views[node].partial)
            cells = ["-" if other == node else _cell(partial.get(other, ())) if other in unreachable else "."
                     for other in nodes]  # fmt: skip
            lines.append(f"  {node:<{width}} {i + 1:>3} " + " ".join(cell.rjust(3) for cell in cells))
        lines.append("  (row: the node probing, numbered; column: the node probed; X: unreachable; "
                     "4 or 6: unreachable over IPv4 or IPv6 alone)")
    if not pairs:
        lines.append("  every node reaches every peer it probes")
    else:
        lines.append(f"  {len(pairs)} broken pair(s):")
        lines += [f"    {pair.source} cannot reach {pair.target}{pair.over}" for pair in pairs[:200]]
        if len(pairs) > 200:
            lines.append(f"    ... and {len(pairs) - 200} more (overlayd status --cluster --json lists all)")
    stale = [node for node, view in views.items() if now - view.written > 1200]
    if stale:
        lines.append(f"  {len(stale)} view(s) older than 20 minutes: their agents may be down")
    return lines



def _cell(families: tuple[str, ...]) -> str:
    """A matrix cell of an unreachable peer: X, or the one family it fails over (4, 6)."""
    return families[0][-1] if len(families) == 1 else "X"
