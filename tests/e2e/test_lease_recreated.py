"""A lease deleted and re-created with the same subnet, PublicIP and MAC loses no packet.

An operator deletes a node's lease key by hand; its owner re-creates it within milliseconds, or
the operator puts it back. The peers hold the deleted peer's entries for the hold-down, so
the re-created lease is applied in place and traffic between the containers never stops.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator

import pytest
from faults import Pair, lease_keys, pair_lab, record, subnet_key
from labtools import log_mark, log_since, metric, needs_lab, wait_for

from overlayd.agent.holddown import HOLD_DOWN
from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]

ROUNDS = 10
BY_OPERATOR = 4  # of the rounds, the last this many have the operator put the key back


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    yield from pair_lab(tmp_path_factory, hosts=2)


def stored(lab: Lab, key: str) -> tuple[str, int]:
    """The value of ``key`` and the etcd lease it is bound to."""
    got = json.loads(lab.etcd().etcdctl("get", key, "-w", "json"))
    kv = got["kvs"][0]
    return base64.b64decode(kv["value"]).decode(), int(kv.get("lease", 0))


def returned(host: LabHost) -> float:
    return metric(host, "overlayd_peer_holds_total", outcome="returned")


def test_a_lease_deleted_and_re_created_ten_times_loses_no_ping(pair: Pair) -> None:
    lab = pair.lab
    h1, h2 = lab.hosts[:2]
    etcd = lab.etcd()
    keys = {h.name: subnet_key(h) for h in (h1, h2)}
    pids = {h.name: h.pid for h in (h1, h2)}
    marks = {h.name: log_mark(h) for h in (h1, h2)}
    before = {h.name: returned(h) for h in (h1, h2)}
    deleted = {h.name: 0 for h in (h1, h2)}
    with pair.ping("lease-recreated") as ping:
        time.sleep(0.5)
        for round_ in range(ROUNDS):
            owner = (h1, h2)[round_ % 2]
            key = keys[owner.name]
            path = f"{ETCD_PREFIX}/subnets/{key}"
            if round_ < ROUNDS - BY_OPERATOR:  # the owner sees its key deleted and re-creates it
                etcd.etcdctl("del", path)
            else:  # the operator puts the same value back, bound to the same etcd lease
                value, lease = stored(lab, path)
                etcd.etcdctl("del", path)
                etcd.etcdctl("put", path, value, f"--lease={lease:x}")
            deleted[owner.name] += 1
            wait_for(lambda key=key: key in lease_keys(lab), 15, f"{key} to be back")
            time.sleep(HOLD_DOWN + 0.5)  # past the hold-down, so each round is a hold of its own
        stats = ping.stop()
    logged = {h.name: log_since(h, marks[h.name]) for h in (h1, h2)}
    record(f"lease deleted and re-created {ROUNDS} times", stats, None,
           next((line for line in logged[h1.name].splitlines() if "returned" in line), ""))  # fmt: skip
    assert stats.received and stats.lost == 0, f"pings lost while leases were re-created: {stats}"
    for host, other in ((h1, h2), (h2, h1)):
        assert host.pid == pids[host.name] and subnet_key(host) == keys[host.name]
        # Each deletion of the other's lease was a hold that ended with the lease back, in place.
        assert returned(host) - before[host.name] == deleted[other.name], logged[host.name]
        line = f"peer {keys[other.name].replace('-', '/')} at {other.ip} returned"
        assert logged[host.name].count(line) == deleted[other.name], logged[host.name]
        assert " removed" not in logged[host.name], logged[host.name]
    assert lab.ping(h1, h2.flannel_address() or "", count=2)
