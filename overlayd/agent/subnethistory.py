"""The subnets this host held before, newest first, kept in the state directory.

subnet.env names only the last subnet, and lives in /run: after a Network change and a restart
it names the new Network's subnet, so putting the old config back (and restarting again) would
give every node yet another random subnet. With the earlier subnets remembered, allocation takes
back the one the reverted config hands out, and containers' old addresses route again.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Network
from pathlib import Path

from overlayd.base.atomicfile import write_atomic

log = logging.getLogger(__name__)

KEPT = 8  # enough for several renumber-and-revert cycles; the file stays a few lines


def history_path(state_dir: Path) -> Path:
    return state_dir / "subnets"


def load_history(state_dir: Path) -> list[IPv4Network]:
    """The remembered subnets, newest first; an unreadable line is skipped and named."""
    path = history_path(state_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read %s (%s); earlier subnets are not preferred this time", path, exc.strerror)
        return []
    subnets: list[IPv4Network] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            subnets.append(IPv4Network(line.strip()))
        except ValueError:
            log.warning("%s line %d is not an IPv4 subnet; skipped", path, number)
    return subnets


def remember(history: list[IPv4Network], subnet: IPv4Network) -> list[IPv4Network]:
    """``history`` with ``subnet`` first (once), at most KEPT long."""
    return [subnet, *(known for known in history if known != subnet)][:KEPT]


def save_history(state_dir: Path, history: list[IPv4Network]) -> None:
    """Write ``history`` atomically; raises OSError."""
    write_atomic(history_path(state_dir), "".join(f"{subnet}\n" for subnet in history))


class SubnetMemory:
    """The history of one state directory, loaded once and updated with each lease we get."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.history = load_history(state_dir)

    def earlier(self, latest: IPv4Network | None) -> list[IPv4Network]:
        """The subnets to take back if free, newest first: ``latest`` (ours a moment ago, or
        subnet.env's), then those the state directory remembers from before a renumbering."""
        return [latest, *self.history] if latest is not None else list(self.history)

    def keep(self, subnet: IPv4Network) -> None:
        """Keep ``subnet`` first; a failure only costs the preference for it after a later
        renumbering, so it is logged and not fatal."""
        history = remember(self.history, subnet)
        if history == self.history:
            return
        try:
            save_history(self.state_dir, history)
        except OSError as exc:
            log.warning(
                "cannot remember subnet %s in --state-dir %s (%s); after a renumbering this node may "
                "not take it back", subnet, self.state_dir, exc.strerror,
            )  # fmt: skip
        self.history = history
