"""Issue 5, case 2: a three-member etcd cluster loses its leader; agents fail over, traffic flows."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
from faults import Pair, pair_lab, plane, record, since
from labtools import log_mark, log_since, needs_lab, wait_for

from overlayd.lab.namespaces import ETCD_PREFIX

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    # A short lease TTL, so lease renewals (writes) happen while the leader is gone.
    yield from pair_lab(tmp_path_factory, hosts=2, etcd_members=3, agent_args=("--subnet-lease-ttl=10",))


def test_2_leader_loss_fails_over_to_the_other_members(pair: Pair) -> None:
    lab = pair.lab
    h1, h2 = lab.hosts[:2]
    # The agents talk to the first endpoint: make its member the leader, then kill it.
    first = lab.etcd(0)
    if lab.etcd_leader() != 0:
        status = json.loads(first.etcdctl("endpoint", "status", "--write-out=json"))
        member_id = format(status[0]["Status"]["header"]["member_id"], "x")
        lab.etcd(lab.etcd_leader()).etcdctl("move-leader", member_id)
    wait_for(lambda: lab.etcd_leader() == 0, 10, "member 1 to lead")
    marks = {h.name: log_mark(h) for h in (h1, h2)}
    with pair.ping("leader-loss") as ping:
        started = time.monotonic()
        lab.stop_etcd(0, signal.SIGKILL)
        wait_for(lambda: lab.etcd_leader() in (1, 2), 20, "a new leader")
        survivor = lab.etcd(lab.etcd_leader())
        lease_id = survivor.etcdctl("lease", "grant", "600").split()[1]
        value = json.dumps({"PublicIP": "192.0.2.94", "PublicIPv6": None, "BackendType": "vxlan",
                            "BackendData": {"VNI": 1, "VtepMAC": "02:aa:00:00:02:47"}})  # fmt: skip
        survivor.etcdctl("put", f"{ETCD_PREFIX}/subnets/198.18.247.0-24", value, f"--lease={lease_id}")
        wait_for(
            lambda: all("198.18.247.0/24" in plane(h)["route"] for h in (h1, h2)),
            30,
            "both agents to see a peer written after the fail-over",
        )
        recovery = since(started)
        wait_for(
            lambda: all("renewed lease" in log_since(h, marks[h.name]) for h in (h1, h2)),
            30,
            "both agents to renew their lease through the surviving members",
        )
        stats = ping.stop()
    logged = [line for line in log_since(h1, marks[h1.name]).splitlines() if "failing over" in line]
    record("etcd leader killed (3 members)", stats, recovery, logged[0] if logged else "")
    assert logged, "h1 did not report the fail-over"
    assert stats.received and stats.lost == 0, f"pings lost while etcd changed leader: {stats}"
    lab.start_etcd(0)
