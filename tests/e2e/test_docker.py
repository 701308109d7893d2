"""Hosts that also run Docker: a real dockerd per lab host, started after the agent as on a fresh host.

dockerd turns on forwarding and sets iptables' ``FORWARD`` policy to DROP; the agent's forward
rules (chain ``OVERLAYD-FWD``) must let the overlay through, both for containers on Docker's own
bridge (``--bip`` from ``overlayd docker-opts``) and for ``--net=none`` containers attached with
``overlayd cni add`` — and nothing else.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from labtools import log_mark, log_since, needs_lab, running_lab, wait_for

from overlayd.lab.docker import DockerUnavailable, LabDocker
from overlayd.lab.namespaces import Lab, LabError, LabHost, sh

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]

JUMP = "-A FORWARD -j OVERLAYD-FWD"


@dataclass
class DockerLab:
    lab: Lab
    dockers: dict[str, LabDocker]  # host name -> its dockerd
    addresses: dict[str, str]  # container name -> address


def docker_opts(host: LabHost) -> list[str]:
    """The dockerd options ``overlayd docker-opts`` writes from the host's subnet.env."""
    env_file = Path(host.dir) / "docker.env"
    sh(sys.executable, "-m", "overlayd", "docker-opts", "-c", "-f", str(host.subnet_file),
       "-d", str(env_file))
    line = env_file.read_text().strip()
    assert line.startswith("DOCKER_OPTS="), line
    return shlex.split(shlex.split(line.partition("=")[2])[0])


def iptables_s(host: LabHost) -> str:
    return sh("iptables", "-w", "5", "-S", netns=host.netns)


def serving(lab: Lab, host: LabHost) -> bool:
    try:
        return lab.http_get(host, "/readyz")[0] == 200
    except LabError:
        return False


def full_passes(lab: Lab, host: LabHost) -> float:
    return lab.metric(host, "overlayd_reconciles_total")


def after_next_full_pass(lab: Lab, host: LabHost) -> None:
    """Wait until a full pass has both started and finished after now (the reconcile interval)."""
    start = full_passes(lab, host)
    wait_for(lambda: full_passes(lab, host) >= start + 2, 30, f"two more full passes on {host.name}")


def container_ping(docker: LabDocker, name: str, address: str, count: int = 3) -> bool:
    command = ["exec", name, "ping", "-c", str(count), "-W", "1", address]
    done = subprocess.run(["docker", "-H", f"unix://{docker.socket}", *command], capture_output=True,
                          text=True, check=False, timeout=60)
    return done.returncode == 0


@pytest.fixture(scope="module")
def docker_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerLab]:
    """Two hosts, agents first; then on each, with forwarding off as on a fresh host, a dockerd
    given ``overlayd docker-opts`` and a busybox container on its bridge."""
    with running_lab(tmp_path_factory, hosts=2) as lab:
        dockers = {host.name: LabDocker(host.netns, Path(host.dir) / "docker") for host in lab.hosts}
        try:
            addresses = {}
            for host in lab.hosts:
                sh("sysctl", "-qw", "net.ipv4.ip_forward=0", netns=host.netns)
                assert "-P FORWARD ACCEPT" in iptables_s(host)
                docker = dockers[host.name]
                try:
                    docker.start(docker_opts(host))
                except DockerUnavailable as exc:
                    print(f"skipped: {exc}")
                    pytest.skip(str(exc))
                docker.import_busybox()
                addresses[f"{host.name}b"] = docker.run(f"{host.name}b")
                assert "-P FORWARD DROP" in iptables_s(host), "dockerd did not set the policy of the bug"
            yield DockerLab(lab, dockers, addresses)
        finally:
            for docker in dockers.values():
                docker.destroy()
                assert not docker.leftover_pids(), f"dockerd in {docker.netns} left processes"


def test_docker_bridge_containers_reach_each_other_after_one_pass(docker_lab: DockerLab) -> None:
    lab, dockers, addresses = docker_lab.lab, docker_lab.dockers, docker_lab.addresses
    h1, h2 = lab.hosts
    for host in (h1, h2):
        after_next_full_pass(lab, host)
        listing = iptables_s(host)
        assert JUMP in listing
        ours = sorted(line for line in listing.splitlines() if line.startswith("-A OVERLAYD-FWD"))
        assert ours == [f"-A OVERLAYD-FWD -{way} 198.18.0.0/16 -j ACCEPT" for way in "ds"]
    assert container_ping(dockers["h1"], "h1b", addresses["h2b"]), "h1's container cannot reach h2's"
    assert container_ping(dockers["h2"], "h2b", addresses["h1b"]), "h2's container cannot reach h1's"
    for host in (h1, h2):
        log = host.log_file.read_text()
        assert log.count("accepting forwarded traffic from and to 198.18.0.0/16") == 1
        assert "drop by policy" not in log, "Docker's DROP is handled: nothing to warn about"


@pytest.mark.parametrize("damage", ["iptables -D FORWARD -j OVERLAYD-FWD", "iptables -F FORWARD"])
def test_a_removed_rule_is_repaired_on_the_next_pass_and_logged_once(docker_lab: DockerLab, damage: str) -> None:  # noqa: E501
    lab, dockers, addresses = docker_lab.lab, docker_lab.dockers, docker_lab.addresses
    h1 = lab.hosts[0]
    mark = log_mark(h1)
    sh(*damage.split(), netns=h1.netns)
    after_next_full_pass(lab, h1)
    assert JUMP in iptables_s(h1)
    assert container_ping(dockers["h2"], "h2b", addresses["h1b"])
    after_next_full_pass(lab, h1)  # a further pass finds it in place and says nothing
    assert log_since(h1, mark).count("were missing or changed") == 1, log_since(h1, mark)


def test_nothing_outside_the_network_is_forwarded(docker_lab: DockerLab) -> None:
    """A packet neither from nor to the Network still meets Docker's DROP: nothing else opened."""
    lab = docker_lab.lab
    h1 = lab.hosts[0]
    outside = f"{lab.name}-out"
    sh("ip", "netns", "add", outside)
    sh("ip", "link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", outside, netns=h1.netns)
    sh("ip", "addr", "add", "198.19.0.1/24", "dev", "out0", netns=h1.netns)
    sh("ip", "link", "set", "out0", "up", netns=h1.netns)
    sh("ip", "addr", "add", "198.19.0.2/24", "dev", "eth0", netns=outside)
    sh("ip", "link", "set", "eth0", "up", netns=outside)
    sh("ip", "route", "add", "default", "via", "198.19.0.1", netns=outside)
    sh("ip", "route", "add", "198.19.0.0/24", "via", h1.ip, netns=lab.underlay_ns)
    underlay = LabHost("ul", lab.underlay_ns, "", "")
    try:
        assert not lab.ping(underlay, "198.19.0.2"), "forwarded outside the Network"
        sh("iptables", "-w", "5", "-P", "FORWARD", "ACCEPT", netns=h1.netns)
        assert lab.ping(underlay, "198.19.0.2"), "the probe's path itself is broken"
    finally:
        sh("iptables", "-w", "5", "-P", "FORWARD", "DROP", netns=h1.netns)
        sh("ip", "route", "del", "198.19.0.0/24", netns=lab.underlay_ns, check=False)
        sh("ip", "netns", "del", outside, check=False)


def test_restarted_dockerd_and_cni_attached_containers(docker_lab: DockerLab) -> None:
    """dockerd restarted (now without its bridge, so cni0 can take the subnet): the rules stay in
    place and ``--net=none`` containers attached with ``overlayd cni add`` reach each other."""
    lab, dockers = docker_lab.lab, docker_lab.dockers
    addresses = {}
    for host in lab.hosts:
        docker = dockers[host.name]
        docker.stop()
        sh("ip", "link", "del", "docker0", netns=host.netns)
        docker.start(("--bridge=none",))
        docker.run(f"{host.name}n", "--net=none")
        netns = f"/proc/{docker.container_pid(f'{host.name}n')}/ns/net"
        result = lab.cni(host, "add", netns)
        addresses[host.name] = json.loads(result)["ips"][0]["address"].split("/")[0]
    for host in lab.hosts:
        after_next_full_pass(lab, host)
        assert JUMP in iptables_s(host) and "-P FORWARD DROP" in iptables_s(host)
    assert container_ping(dockers["h1"], "h1n", addresses["h2"], count=13)
    assert container_ping(dockers["h2"], "h2n", addresses["h1"], count=13)
    docker_lab.addresses.update({"h1n": addresses["h1"], "h2n": addresses["h2"]})


def test_forward_rules_off_leave_the_policy_to_the_operator(docker_lab: DockerLab) -> None:
    """With --iptables-forward-rules=false nothing is written: Docker's DROP then drops the overlay
    (what the rules are for), and the agent names the dropping chain."""
    lab, dockers, addresses = docker_lab.lab, docker_lab.dockers, docker_lab.addresses
    h2 = lab.hosts[1]
    lab.stop_agent(h2)
    done = sh(sys.executable, "-m", "overlayd", "cleanup", netns=h2.netns)
    assert "OVERLAYD-FWD" in done
    mark = log_mark(h2)
    h2.agent_args.append("--iptables-forward-rules=false")
    lab.start_agent(h2)
    wait_for(lambda: serving(lab, h2), 60, "h2's agent serving again")
    after_next_full_pass(lab, h2)
    assert "OVERLAYD-FWD" not in iptables_s(h2)
    assert not container_ping(dockers["h1"], "h1n", addresses["h2n"], count=2)
    assert "ip filter FORWARD drop by policy" in log_since(h2, mark), log_since(h2, mark)


def test_cleanup_removes_the_rules_and_nothing_of_dockers(docker_lab: DockerLab) -> None:
    lab = docker_lab.lab
    h1 = lab.hosts[0]
    lab.stop_agent(h1)
    before = iptables_s(h1)
    assert JUMP in before
    done = subprocess.run(["ip", "netns", "exec", h1.netns, sys.executable, "-m", "overlayd", "cleanup"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    after = iptables_s(h1)
    assert "OVERLAYD-FWD" not in after
    assert [line for line in before.splitlines() if "OVERLAYD-FWD" not in line] == after.splitlines()
