"""Two networks on the same hosts, one agent each per host (flanneld's one daemon per -etcd-prefix):
each agent keeps its own firewall table and chain, neither rewrites the other's, and both overlays
carry a 20 Hz ping for a minute without losing one."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Interface

import pytest
from labtools import log_mark, log_since, needs_lab, running_lab

from overlayd.lab.hosts import LabNetwork
from overlayd.lab.namespaces import Lab, sh
from overlayd.netfilter.names import names_for_prefix

pytestmark = needs_lab

RED = json.dumps({"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1}})
BLUE = LabNetwork(
    name="blue",
    prefix="/example.net/blue",
    config=json.dumps({"Network": "198.19.0.0/16", "Backend": {"Type": "vxlan", "VNI": 2}}),
    bridge="cni1",
    metrics_port=9465,
    agent_args=("--ip-masq-fully-random-disable",),
)
PING_SECONDS = 60
PING_INTERVAL = 0.05  # 20 Hz


@pytest.fixture(scope="module")
def two_networks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    # With blackhole routes for both subnets, which the containers' bridge routes must win over.
    args = ("--ip-masq", "--ip-blackhole-route")
    with running_lab(tmp_path_factory, hosts=2, agent_args=args, network_config=RED) as lab:
        lab.add_network(BLUE)
        lab.wait_converged(timeout=60, network=BLUE.name)
        yield lab


def nft_table(lab: Lab, host_index: int, table: str) -> str:
    return sh("nft", "list", "table", "ip", table, netns=lab.hosts[host_index].netns, check=False)


def test_each_agent_owns_a_table_with_its_own_network(two_networks: Lab) -> None:
    blue = names_for_prefix(BLUE.prefix)
    for index, host in enumerate(two_networks.hosts):
        red_table = nft_table(two_networks, index, "overlayd")
        blue_table = nft_table(two_networks, index, blue.table)
        assert "198.18.0.0/16" in red_table and "198.19.0.0/16" not in red_table, host.name
        assert "198.19.0.0/16" in blue_table and "198.18.0.0/16" not in blue_table, host.name
        assert "masquerade fully-random" in red_table and "fully-random" not in blue_table, host.name
        assert "meta mark & 0x00004000 == 0x00004000 return" in red_table
        forward = sh("iptables", "-S", netns=host.netns)
        assert "-A OVERLAYD-FWD -s 198.18.0.0/16 -j ACCEPT" in forward
        assert f"-A {blue.forward_chain} -s 198.19.0.0/16 -j ACCEPT" in forward
        assert host.subnet_env()["FLANNEL_NETWORK"] == "198.18.0.0/16"
        assert host.subnet_env(BLUE.name)["FLANNEL_NETWORK"] == "198.19.0.0/16"
        blackholes = sh("ip", "route", "show", "type", "blackhole", netns=host.netns).split("\n")
        subnets = [host.subnet_env(network)["FLANNEL_SUBNET"] for network in (None, BLUE.name)]
        wanted = {f"blackhole {IPv4Interface(subnet).network} metric 4294967295" for subnet in subnets}
        assert {line.strip() for line in blackholes if line.strip()} == wanted, host.name


def test_both_overlays_carry_20_hz_pings_for_a_minute_without_loss(two_networks: Lab) -> None:
    lab = two_networks
    h1, h2 = lab.hosts
    pairs = []
    for network in (None, BLUE.name):
        tag = network or "red"
        lab.add_container(h1, f"{tag}1", network)
        target = lab.add_container(h2, f"{tag}2", network)
        pairs.append((tag, lab.container_ns(f"{tag}1"), target))
    assert pairs[0][2].startswith("198.18.") and pairs[1][2].startswith("198.19.")
    marks = [(host, network, log_mark(host, network)) for host in lab.hosts for network in (None, BLUE.name)]
    count = int(PING_SECONDS / PING_INTERVAL)
    pings = {
        tag: subprocess.Popen(
            ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-i", str(PING_INTERVAL), "-c", str(count),
             "-W", "1", target],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for tag, netns, target in pairs
    }  # fmt: skip
    results = {tag: ping.communicate(timeout=PING_SECONDS * 3)[0] for tag, ping in pings.items()}
    for tag, out in results.items():
        sent = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert sent is not None, out
        assert (int(sent[1]), int(sent[2])) == (count, count), f"{tag}: {out}"
    for host, network, mark in marks:
        logged = log_since(host, mark, network)
        assert "replaced nftables table" not in logged, f"{host.name} {network or 'red'}: {logged[-2000:]}"
        assert "deleted nftables table" not in logged

