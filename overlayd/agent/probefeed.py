"""Starting the probe thread, and handing it the peers to probe from the loop's thread."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from overlayd.agent.health import HealthReporter
from overlayd.agent.icmp import Address
from overlayd.agent.peerstate import PeerState
from overlayd.agent.prober import Prober, ProbeTargets, ReachSnapshot, ViewPublisher
from overlayd.agent.reach import ProbeBudget
from overlayd.backend.api import Backend, probe_targets
from overlayd.etcd.api import SubnetRegistry
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease, serves_ipv6

# Seconds between two rebuilds of the targets while peers keep changing one by one (a new, gone or
# newly programmed peer is handed over at once): a rebuild walks every peer.
FEED_INTERVAL = 2.0


def likely_causes(backend: Backend, config: NetworkConfig) -> str:
    """What usually stops probes while the kernel's entries are right, on this backend."""
    ingress = backend.underlay_ingress(config)
    what = f"{ingress.protocol.upper()} port {ingress.port}" if ingress is not None else "the path"
    blocked = f"{what} blocked between the hosts (a firewall, a security group)"
    return (f"{blocked}, an MTU black hole (a path MTU below the device's), or the peer host or its "
            "overlay device down")  # fmt: skip


class ProbeFeed:
    """Called by the loop after each batch of events and each pass (``HealthReporter.on_peers``).
    It asks the backend in force at each call: a live switch changes it under the feed."""

    def __init__(self, prober: Prober, state: PeerState) -> None:
        self.prober, self.state = prober, state
        self._basis: tuple[object, ...] = ()
        self._next = 0.0
        self._fed: ProbeTargets | None = None
        # Each peer's addresses, by key, kept while its lease (and the basis) are the same: asking
        # the backend costs a few microseconds a peer, too dear for every rebuild at 1000 peers.
        self._known: dict[str, tuple[Lease, tuple[Address, ...]]] = {}

    def __call__(self) -> None:
        state, now, backend = self.state, time.monotonic(), self.state.backend
        if state.lease is None or state.config is None or state.underlay is None or backend is None:
            return
        wanted = state.wanted()
        basis = (state.lease, state.config, backend, len(wanted), len(state.programmed), len(state.peers))
        if basis == self._basis and now < self._next:
            return
        if basis[:3] != self._basis[:3]:
            self._known = {}  # another backend, config or own lease: every peer's addresses anew
        self._basis, self._next = basis, now + FEED_INTERVAL
        ipv6 = serves_ipv6(state.config, state.lease)
        known, self._known = self._known, {}
        targets: dict[str, tuple[Address, ...]] = {}
        for key in wanted.keys():  # noqa: SIM118 (a DesiredEntries, not a dict)
            lease = state.peers.get(key)
            if lease is None:
                continue
            held = known.get(key)
            if held is not None and held[0] is lease:
                addresses = held[1]
            else:
                addresses = probe_targets(backend, lease, ipv6)
            self._known[key] = (lease, addresses)
            if addresses:
                targets[key] = addresses
        causes = likely_causes(backend, state.config)
        fed = ProbeTargets(state.lease.key, targets, frozenset(state.programmed), causes)
        if fed != self._fed:  # the same peers again: the probe thread need not look
            self._fed = fed
            self.prober.feed(fed)


def snapshot_json(snapshot: ReachSnapshot) -> bytes:
    """``/peers``: every peer's verdict (state, since, round trip; the families that fail and each
    family's own), and how often each address is probed."""
    data = asdict(snapshot)
    for peer in data["peers"]:
        peer["state"] = peer["state"].value
        peer["failing"] = [family.value for family in peer["failing"]]
        for path in peer["paths"]:
            path["family"], path["state"] = path["family"].value, path["state"].value
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def start_prober(
    rate: float, health: HealthReporter, registry: SubnetRegistry, state: PeerState
) -> Prober | None:
    """The probe thread, started and fed after each turn of the loop (None: ``--probe-rate=0``)."""
    metrics = health.metrics
    if rate <= 0:
        metrics.reach = lambda: b'{"peers":[],"problem":"probing is off (--probe-rate=0)"}\n'
        return None
    prober = Prober(metrics, ProbeBudget(rate=rate), ViewPublisher(registry))
    metrics.reach = lambda: snapshot_json(prober.snapshot())
    prober.start()
    health.on_peers = ProbeFeed(prober, state)
    return prober
