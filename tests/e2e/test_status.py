"""``overlayd status --json`` inside a lab host agrees with the kernel and etcd; --cluster lists all."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from labtools import needs_lab, status_json

from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh

pytestmark = [needs_lab, pytest.mark.root]


def kernel_routes(host: LabHost) -> list[str]:
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "dev", "flannel.1", netns=host.netns))
    return sorted(route["dst"] for route in routes if route.get("gateway"))


def etcd_leases(lab: Lab) -> dict[str, dict]:
    """Subnet → lease value, as etcdctl reads them."""
    out = lab.etcd().etcdctl("get", "--prefix", f"{ETCD_PREFIX}/subnets/")
    lines = out.strip().splitlines()
    pairs = zip(lines[0::2], lines[1::2], strict=True)
    return {key.rsplit("/", 1)[1].replace("-", "/"): json.loads(value) for key, value in pairs}


def test_status_matches_kernel_and_etcd(lab: Lab) -> None:
    h1 = lab.hosts[0]
    status = status_json(lab, h1)
    env = h1.subnet_env()
    assert status["subnet_env"] == env
    link = json.loads(sh("ip", "-j", "link", "show", "flannel.1", netns=h1.netns))[0]
    device = status["device"]
    assert (device["name"], device["mtu"], device["mac"]) == ("flannel.1", link["mtu"], link["address"])
    assert device["routes"] == kernel_routes(h1)
    assert device["neighbours"] == device["fdb_entries"] == len(lab.hosts) - 1

    own = status["own_lease"]
    leases = etcd_leases(lab)
    assert own["subnet"] == env["FLANNEL_SUBNET"].replace(".1/", ".0/")
    assert leases[own["subnet"]]["PublicIP"] == own["public_ip"] == h1.ip
    assert leases[own["subnet"]]["BackendData"]["VtepMAC"] == own["vtep_mac"] == link["address"]
    assert 0 < own["ttl"] <= 86400

    agent = status["agent"]
    assert status["agent_error"] is None, status["agent_error"]
    assert agent["ready"] is True
    assert agent["subnet"] == own["subnet"]
    assert agent["peers_known"] == agent["peers_programmed"] == len(lab.hosts) - 1
    assert status["leases"] is None, "the cluster table is only read with --cluster"


def test_status_cluster_lists_every_host(lab: Lab) -> None:
    h2 = lab.hosts[1]
    status = status_json(lab, h2, "--cluster")
    leases = etcd_leases(lab)
    rows = {row["subnet"]: row for row in status["leases"]}
    assert set(rows) == set(leases)
    assert {row["public_ip"] for row in rows.values()} == {host.ip for host in lab.hosts}
    own_subnet = status["own_lease"]["subnet"]
    routes = kernel_routes(h2)
    for subnet, row in rows.items():
        assert row["vtep_mac"] == leases[subnet]["BackendData"]["VtepMAC"]
        assert row["programmed"] is (None if subnet == own_subnet else subnet in routes)
    assert all(row["programmed"] for subnet, row in rows.items() if subnet != own_subnet)


def test_status_with_etcd_and_agent_unreachable_still_shows_the_kernel(lab: Lab) -> None:
    h3 = lab.hosts[2]
    done = subprocess.run(
        ["ip", "netns", "exec", h3.netns, sys.executable, "-m", "overlayd", "status",
         "--etcd-endpoints=http://192.0.2.2:1", "--metrics-address=127.0.0.1:1",
         f"--subnet-file={h3.subnet_file}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 3, "a scripted check must see the agent is not serving"
    assert "overlayd status: agent unreachable at http://127.0.0.1:1/metrics" in done.stderr
    assert "agent unreachable at http://127.0.0.1:1/metrics" in out
    assert "etcd http://192.0.2.2:1" in out and "unreachable" in out
    assert f"device      flannel.1 mtu {h3.subnet_env()['FLANNEL_MTU']}" in out
