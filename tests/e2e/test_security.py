"""The VXLAN ingress allowlist against an intruder on the underlay.

VXLAN has no authentication: anyone who can send UDP to port 8472 on a host can inject frames
into its overlay. The intruder here is a namespace on the lab underlay (no agent, no lease) that
builds its own VXLAN device aimed at h1, with h1's VTEP MAC in its neighbour table. A probe table
in h1's namespace counts decapsulated packets from the intruder's inner source address on
``flannel.1``: zero while the allowlist is on (the drop rule's counter rises instead, and the agent
names the intruder), more than zero once h1's agent runs with the allowlist off — which proves the
probe can see the attack.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from labtools import metric, needs_lab, running_lab, wait_for

from overlayd.lab import Lab, LabHost, sh

pytestmark = [needs_lab, pytest.mark.root]

INTRUDER_IP = IPv4Address("192.0.2.250")  # underlay, outside the hosts' range
INTRUDER_OVERLAY_IP = "198.19.250.1"  # inside 198.18.0.0/15, outside the lab's Network
INTRUDER_PINGS = 3
PROBE = (
    "table ip probe {\n\tchain prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n"
    f'\t\tiifname "flannel.1" ip saddr {INTRUDER_OVERLAY_IP} counter\n\t}}\n}}\n'
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=2) as lab:
        yield lab


def counter_packets(netns: str, table: str, pattern: str) -> int:
    """Packets counted so far by the rule of ``table`` whose text contains ``pattern``."""
    listing = sh("nft", "list", "table", "ip", table, netns=netns, check=False)
    for line in listing.splitlines():
        if pattern in line and (match := re.search(r"counter packets (\d+)", line)):
            return int(match[1])
    return -1  # no such rule


def add_intruder(lab: Lab, target: LabHost) -> str:
    """An agent-less node on the underlay with a VXLAN device aimed at ``target``'s flannel.1."""
    netns = f"{lab.name}-intruder"
    lab._make_node(netns, "intruder", INTRUDER_IP)
    link = json.loads(sh("ip", "-j", "link", "show", "flannel.1", netns=target.netns))[0]
    target_overlay = target.flannel_address()
    assert target_overlay is not None
    sh("ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "8472", "remote", target.ip,
       "local", str(INTRUDER_IP), "dev", "eth0", "nolearning", netns=netns)  # fmt: skip
    sh("ip", "addr", "add", f"{INTRUDER_OVERLAY_IP}/32", "dev", "vx0", netns=netns)
    sh("ip", "link", "set", "vx0", "up", netns=netns)
    sh("ip", "neigh", "add", target_overlay, "lladdr", link["address"], "dev", "vx0", "nud", "permanent",
       netns=netns)  # fmt: skip
    sh("ip", "route", "add", f"{target_overlay}/32", "dev", "vx0", netns=netns)
    return netns


def intruder_ping(netns: str, target: str) -> bool:
    out = sh("ping", "-c", str(INTRUDER_PINGS), "-i", "0.2", "-W", "1", target, netns=netns, check=False)
    return f"{INTRUDER_PINGS} received" in out or " 0% packet loss" in out


def test_allowlist_drops_intruder_and_passes_peers(lab: Lab) -> None:
    h1, h2 = lab.hosts[0], lab.hosts[1]
    target = h1.flannel_address()
    assert target is not None

    def h1_table() -> str:
        return sh("nft", "list", "table", "ip", "overlayd", netns=h1.netns, check=False)

    assert "vxlan_peers" in h1_table()
    intruder = add_intruder(lab, h1)
    probe = lab.dir / "probe.nft"
    probe.write_text(PROBE)
    sh("nft", "-f", str(probe), netns=h1.netns)

    assert lab.ping(h2, target, count=3), "a peer's VXLAN traffic must pass the allowlist"
    dropped_before = counter_packets(h1.netns, "overlayd", "@vxlan_peers")
    assert not intruder_ping(intruder, target)
    assert counter_packets(h1.netns, "probe", INTRUDER_OVERLAY_IP) == 0, "intruder's packets reached h1"
    assert counter_packets(h1.netns, "overlayd", "@vxlan_peers") >= dropped_before + INTRUDER_PINGS
    # The operator learns who was dropped (a node sending from another address than its
    # PublicIP would be cut off the same way), once, and monitoring counts it.
    wait_for(lambda: metric(h1, "overlayd_vxlan_ingress_dropped_sources") == 1, 15, "the drop gauge")
    warnings = [line for line in h1.log_file.read_text().splitlines() if "allowlist dropped" in line]
    assert len(warnings) == 1 and f"packets from {INTRUDER_IP}:" in warnings[0], warnings
    assert "--vxlan-ingress-allowlist=false" in warnings[0]

    # A host joining later is allowed by the fast path (an element added before its entries).
    h3 = lab.add_host()
    wait_for(lambda: h3.flannel_address(), 30, "h3's subnet.env")
    lab.wait_converged(timeout=60)
    wait_for(lambda: lab.ping(h3, target), 30, "h3 reaching h1 through the allowlist")
    assert h3.ip in sh("nft", "list", "set", "ip", "overlayd", "vxlan_peers", netns=h1.netns)

    # The same attack with the allowlist off gets through: the probe above can see it.
    lab.stop_agent(h1, signal.SIGTERM)
    h1.agent_args.append("--vxlan-ingress-allowlist=false")
    lab.start_agent(h1)
    wait_for(lambda: "vxlan_peers" not in h1_table(), 30, "h1's allowlist to be removed")
    intruder_ping(intruder, target)
    assert counter_packets(h1.netns, "probe", INTRUDER_OVERLAY_IP) >= INTRUDER_PINGS
    assert lab.ping(h2, target, count=3)
