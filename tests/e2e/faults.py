"""What the fault tests share: a lab with a container on h1 and one on h2, traffic between them,
fake peer leases, kernel-state snapshots, and a record of each fault's figures.

Set ``OVERLAYD_FAULT_REPORT=<file>`` to append one JSON line per fault (loss, recovery time, what
the agents logged): the figures in docs/reliability.md come from such runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from labtools import running_lab

from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh
from overlayd.lab.traffic import PingProbe, PingStats, TcpProbe

PING_INTERVAL = 0.05


@dataclass
class Pair:
    """A lab whose h1 runs container c1 and h2 runs container c2; c1 sends to c2."""

    lab: Lab
    client_ns: str
    server_ns: str
    server_ip: str

    def ping(self, name: str) -> PingProbe:
        return PingProbe(self.client_ns, self.server_ip, self.lab.dir / f"{name}.ping", PING_INTERVAL)

    def tcp(self, name: str, seconds: int) -> TcpProbe:
        return TcpProbe(self.client_ns, self.server_ns, self.server_ip, seconds, self.lab.dir / f"{name}.tcp")


def pair_lab(
    tmp_path_factory: pytest.TempPathFactory, hosts: int = 3, etcd_members: int = 1, agent_args: tuple = ()
) -> Iterator[Pair]:
    """A converged lab of ``hosts`` hosts with containers c1 (h1) and c2 (h2); torn down always."""
    with running_lab(tmp_path_factory, hosts, tuple(agent_args), etcd_members) as lab:
        server_ip = lab.add_container(lab.hosts[1], "c2")
        lab.add_container(lab.hosts[0], "c1")
        yield Pair(lab, lab.container_ns("c1"), lab.container_ns("c2"), server_ip)


def put_fake_peer(lab: Lab, key: str, public_ip: str, mac: str) -> None:
    """A peer lease (bound to a 10-minute etcd lease) for a host that does not exist."""
    etcd = lab.etcd()
    lease_id = etcd.etcdctl("lease", "grant", "600").split()[1]
    value = json.dumps(
        {"PublicIP": public_ip, "PublicIPv6": None, "BackendType": "vxlan",
         "BackendData": {"VNI": 1, "VtepMAC": mac}},
        separators=(",", ":"),
    )  # fmt: skip
    etcd.etcdctl("put", f"{ETCD_PREFIX}/subnets/{key}", value, f"--lease={lease_id}")


def lease_keys(lab: Lab, index: int = 0) -> set[str]:
    out = lab.etcd(index).etcdctl("get", f"{ETCD_PREFIX}/subnets/", "--prefix", "--keys-only")
    return {line.rsplit("/", 1)[1] for line in out.split() if line.strip()}


def subnet_key(host: LabHost) -> str:
    """The host's lease key, e.g. 198.18.46.0-24."""
    return f"{host.flannel_address()}-{host.subnet_env()['FLANNEL_SUBNET'].split('/')[1]}"


def plane(host: LabHost) -> dict[str, str]:
    """The host's flannel.1 routes, permanent neighbours and FDB entries, as sorted lines per kind.

    Sorted because the kernel lists re-added entries in a different order: the set is what counts.
    FDB entries are the agent's (those with a ``dst``): the kernel's own multicast entries on the
    device come and go with its link state and are none of the agent's business.
    """
    dev = ("dev", "flannel.1")
    fdb = sh("bridge", "fdb", "show", *dev, netns=host.netns, check=False)
    listings = {
        "route": sh("ip", "-4", "route", "show", *dev, netns=host.netns, check=False),
        "neigh": sh("ip", "-4", "neigh", "show", *dev, "nud", "permanent", netns=host.netns, check=False),
        "fdb": "\n".join(line for line in fdb.splitlines() if " dst " in line),
    }
    return {kind: "\n".join(sorted(text.splitlines())) for kind, text in listings.items()}


def plane_changes(before: dict[str, str], after: dict[str, str]) -> str:
    """What differs between two plane() results, line by line, for a failure message."""
    changes = []
    for kind in before:
        old, new = set(before[kind].splitlines()), set(after.get(kind, "").splitlines())
        changes += [f"{kind} missing: {line}" for line in sorted(old - new)]
        changes += [f"{kind} extra: {line}" for line in sorted(new - old)]
    return "\n".join(changes) or "no difference"


def vtep_mac(host: LabHost) -> str:
    return json.loads(sh("ip", "-j", "link", "show", "flannel.1", netns=host.netns))[0]["address"]


def record(fault: str, stats: PingStats, recovery: float | None, logged: str, **extra: object) -> None:
    """Append one fault's figures to $OVERLAYD_FAULT_REPORT (if set) and print them."""
    row = {
        "fault": fault,
        "pings_sent": stats.sent,
        "pings_lost": stats.lost,
        "longest_gap_s": round(stats.longest_gap, 2),
        "recovery_s": None if recovery is None else round(recovery, 2),
        "logged": logged,
        **extra,
    }
    print(json.dumps(row))
    report = os.environ.get("OVERLAYD_FAULT_REPORT")
    if report:
        with Path(report).open("a") as out:
            out.write(json.dumps(row) + "\n")


def since(started: float) -> float:
    return time.monotonic() - started


@contextlib.contextmanager
def udp_dropped(host: LabHost, source: LabHost) -> Iterator[None]:
    """``host`` drops every UDP packet from ``source``'s underlay address (its overlay traffic too,
    while every kernel entry stays right), until the block ends."""
    table = ("inet", "udp_fault")
    sh("nft", "add", "table", *table, netns=host.netns)
    sh("nft", "add", "chain", *table, "input", "{ type filter hook input priority -400 ; }", netns=host.netns)
    match = ("ip", "saddr", source.ip, "meta", "l4proto", "udp")
    sh("nft", "add", "rule", *table, "input", *match, "drop", netns=host.netns)
    try:
        yield
    finally:
        sh("nft", "delete", "table", *table, netns=host.netns)
