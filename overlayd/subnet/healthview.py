"""One node's view of the data path as it stores it in etcd, and the cluster's broken pairs (pure).

A node stores only the peers it cannot reach (and how many it probes), so a healthy 5000-node
cluster stores 5000 short values, rewritten only when a node's set changes or its TTL needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class ViewError(ValueError):
    """A stored view that cannot be read; the message names the node and what is wrong."""


@dataclass(frozen=True)
class NodeView:
    node: str  # the node's lease key, e.g. 198.18.7.0-24
    probed: int  # peers it probes
    unreachable: tuple[str, ...]  # lease keys of the peers it cannot reach, sorted
    written: float  # unix time


def encode_view(view: NodeView) -> bytes:
    data = {"probed": view.probed, "unreachable": list(view.unreachable), "written": round(view.written, 1)}
    return json.dumps(data, separators=(",", ":")).encode()


def decode_view(node: str, raw: bytes) -> NodeView:
    """The view stored for ``node``; ViewError when it is not one."""
    try:
        data = json.loads(raw)
        unreachable = data["unreachable"]
        if not isinstance(unreachable, list) or not all(isinstance(key, str) for key in unreachable):
            raise TypeError("unreachable is not a list of lease keys")
        return NodeView(node, int(data["probed"]), tuple(sorted(unreachable)), float(data["written"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ViewError(f"data path view of {node}: {exc!r}; the node's agent rewrites it") from None


@dataclass(frozen=True)
class BrokenPair:
    source: str  # the node that cannot reach
    target: str  # the peer it cannot reach


def broken_pairs(views: dict[str, NodeView]) -> list[BrokenPair]:
    """Every (node, peer) where the node reports the peer unreachable, sorted."""
    return sorted(
        (BrokenPair(node, target) for node, view in views.items() for target in view.unreachable),
        key=lambda pair: (pair.source, pair.target),
    )
