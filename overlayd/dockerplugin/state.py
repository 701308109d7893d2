"""The plugin's record of Docker's networks and endpoints, kept in one JSON file written atomically.

A restarted plugin reads it back, so the networks and endpoints dockerd already knows stay known
(Join, Leave and DeleteEndpoint of a container started before the restart still work). Addresses
are not here: they live in host-local's store (``hoststore``), which is the one truth for them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from overlayd.base.atomicfile import write_atomic

log = logging.getLogger(__name__)

VERSION = 1


@dataclass(frozen=True)
class NetworkRecord:
    network_id: str
    pool: str  # the subnet, CIDR
    gateway: str  # the bridge's address, without length


@dataclass(frozen=True)
class EndpointRecord:
    endpoint_id: str
    network_id: str
    address: str  # CIDR, as dockerd gave it in CreateEndpoint
    host_veth: str  # the end left on the bridge


@dataclass
class PluginState:
    networks: dict[str, NetworkRecord] = field(default_factory=dict)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)

    def render(self) -> str:
        return json.dumps({
            "version": VERSION,
            "networks": [asdict(record) for record in self.networks.values()],
            "endpoints": [asdict(record) for record in self.endpoints.values()],
        }, indent=1, sort_keys=True) + "\n"  # fmt: skip

    @classmethod
    def parse(cls, text: str) -> PluginState:
        data = json.loads(text)
        networks = [NetworkRecord(**record) for record in data.get("networks", [])]
        endpoints = [EndpointRecord(**record) for record in data.get("endpoints", [])]
        return cls({n.network_id: n for n in networks}, {e.endpoint_id: e for e in endpoints})


class StateFile:
    """``PluginState`` on disk: loaded at start, saved after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> PluginState:
        """The saved state; empty when there is none. An unreadable file is kept aside (``.bad``)
        and reported, not fatal: dockerd re-creates what it misses."""
        try:
            return PluginState.parse(self.path.read_text())
        except FileNotFoundError:
            return PluginState()
        except (OSError, ValueError, TypeError, AttributeError) as err:
            aside = self.path.with_suffix(".bad")
            log.error(
                "plugin state %s is unreadable (%s); moved to %s, starting empty", self.path, err, aside
            )
            self.path.replace(aside)
            return PluginState()

    def save(self, state: PluginState) -> None:
        """Atomic, not fsynced: it must survive a restart of the plugin, and its endpoints do not
        outlive a reboot of the machine (saves the fsync's milliseconds on every ``docker run``)."""
        write_atomic(self.path, state.render(), mode=0o600, durable=False)
