"""Issue 5, case 10: twenty agents start at once against a pool of fifteen free subnets."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator

import pytest
from labtools import metric, needs_lab, running_lab, wait_for

from overlayd.lab.namespaces import ETCD_PREFIX, Lab

pytestmark = [needs_lab, pytest.mark.root, pytest.mark.slow]

AGENTS = 20
POOL = 15  # SubnetMin 198.18.1.0 .. SubnetMax 198.18.15.0
CONFIG = json.dumps({"Network": "198.18.0.0/16", "SubnetMin": "198.18.1.0", "SubnetMax": "198.18.15.0",
                     "Backend": {"Type": "vxlan"}})  # fmt: skip


@pytest.fixture
def crowded_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(
        tmp_path_factory, hosts=AGENTS, converge=False, network_config=CONFIG, start_agents=False
    ) as lab:
        yield lab


def lease_history(lab: Lab) -> list[tuple[str, str]]:
    """Every PUT to a subnet key since etcd started: (key, PublicIP), from etcd's own history."""
    command = ["ip", "netns", "exec", lab.etcd_ns, "etcdctl", f"--endpoints={lab.etcd_endpoint}", "watch",
               "--prefix", f"{ETCD_PREFIX}/subnets/", "--rev=1", "--write-out=json"]  # fmt: skip
    try:
        env = {**os.environ, "ETCDCTL_API": "3"}
        subprocess.run(command, capture_output=True, text=True, timeout=3, env=env, check=False)
        raise AssertionError("etcdctl watch ended on its own")
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
    puts = []
    for line in out.splitlines():
        for event in json.loads(line).get("Events") or []:
            if event.get("type", "PUT") == "PUT":
                key = base64.b64decode(event["kv"]["key"]).decode().rsplit("/", 1)[1]
                value = json.loads(base64.b64decode(event["kv"]["value"]))
                puts.append((key, value["PublicIP"]))
    return puts


def test_10_twenty_agents_fifteen_subnets_no_duplicates_no_crash_loop(crowded_lab: Lab) -> None:
    lab = crowded_lab
    for host in lab.hosts:  # all at once: each start is a Popen, the agents race in etcd
        lab.start_agent(host)

    def settled() -> bool:
        winners = [h for h in lab.hosts if h.subnet_env().get("FLANNEL_SUBNET")]
        losers = [h for h in lab.hosts if "out of subnets" in h.log_file.read_text(errors="replace")]
        return len(winners) == POOL and len(losers) == AGENTS - POOL

    wait_for(settled, 120, f"{POOL} agents to hold subnets and {AGENTS - POOL} to report out of subnets")
    winners = [h for h in lab.hosts if h.subnet_env().get("FLANNEL_SUBNET")]
    losers = [h for h in lab.hosts if h not in winners]
    subnets = [h.subnet_env()["FLANNEL_SUBNET"] for h in winners]
    assert len(set(subnets)) == POOL, f"duplicate subnets in subnet.env: {sorted(subnets)}"
    owners: dict[str, set[str]] = {}
    for key, public_ip in lease_history(lab):
        owners.setdefault(key, set()).add(public_ip)
    assert len(owners) == POOL and all(len(ips) == 1 for ips in owners.values()), (
        f"a subnet key was written for two hosts: {owners}"
    )
    assert {ip for ips in owners.values() for ip in ips} == {h.ip for h in winners}
    for host in losers:
        assert os.path.exists(f"/proc/{host.pid}"), f"{host.name}'s agent exited"
        text = host.log_file.read_text(errors="replace")
        assert text.count("out of subnets") == 1, f"{host.name} should log the exhaustion once:\n{text}"
        assert metric(host, "overlayd_ready") == 0
        assert metric(host, "overlayd_subnet_pool_size") == POOL
        assert metric(host, "overlayd_lease_acquire_failures_total", reason="out_of_subnets") >= 1
