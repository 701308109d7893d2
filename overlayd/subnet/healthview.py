"""One node's view of the data path as it stores it in etcd, and the cluster's broken pairs (pure).

A node stores only the peers it cannot reach (and how many it probes), so a healthy 5000-node
cluster stores 5000 short values, rewritten only when a node's set changes or its TTL needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class ViewError(ValueError):
    """A stored view that cannot be read; the message names the node and what is wrong."""


# Unreachable peers reached over some of their families: (lease key, the failing families), sorted.
Partial = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class NodeView:
    node: str  # the node's lease key, e.g. 198.18.7.0-24
    probed: int  # peers it probes
    unreachable: tuple[str, ...]  # lease keys of the peers it cannot reach, sorted
    written: float  # unix time
    # Those of ``unreachable`` that still answer over another family (a dual-stack peer whose
    # IPv6 path alone fails): the families that fail. Absent from views of older agents.
    partial: Partial = ()


def encode_view(view: NodeView) -> bytes:
    data: dict[str, object] = {"probed": view.probed, "unreachable": list(view.unreachable),
                               "written": round(view.written, 1)}  # fmt: skip
    if view.partial:
        data["partial"] = {key: list(families) for key, families in view.partial}
    return json.dumps(data, separators=(",", ":")).encode()


def decode_view(node: str, raw: bytes) -> NodeView:
    """The view stored for ``node``; ViewError when it is not one."""
    try:
        data = json.loads(raw)
        unreachable = data["unreachable"]
        if not isinstance(unreachable, list) or not all(isinstance(key, str) for key in unreachable):
            raise TypeError("unreachable is not a list of lease keys")
        partial = data.get("partial", {})
        lists = partial.values() if isinstance(partial, dict) else [None]
        if not all(isinstance(names, list) and all(isinstance(f, str) for f in names) for names in lists):
            raise TypeError("partial is not a map of lease keys to lists of families")
        found = tuple(sorted((str(key), tuple(families)) for key, families in partial.items()))
        return NodeView(node, int(data["probed"]), tuple(sorted(unreachable)), float(data["written"]), found)
    except (ValueError, KeyError, TypeError) as exc:
        raise ViewError(f"data path view of {node}: {exc!r}; the node's agent rewrites it") from None


@dataclass(frozen=True)
class BrokenPair:
    source: str  # the node that cannot reach
    target: str  # the peer it cannot reach
    families: tuple[str, ...] = ()  # over these alone (it answers over the others); (): over any

    @property
    def over(self) -> str:
        """`` over ipv6`` for a pair broken over some families only, else ""."""
        return f" over {', '.join(self.families)}" if self.families else ""


def broken_pairs(views: dict[str, NodeView]) -> list[BrokenPair]:
    """Every (node, peer) where the node reports the peer unreachable, sorted."""
    return sorted(
        (BrokenPair(node, target, dict(view.partial).get(target, ()))
         for node, view in views.items() for target in view.unreachable),
        key=lambda pair: (pair.source, pair.target),
    )  # fmt: skip
