"""Docker's containers on the overlay through ``overlayd docker-plugin``, with a real dockerd per host.

Each host runs its agent, a dockerd (without a bridge of its own) and the plugin beside it; on
each, ``docker network create -d overlayd --ipam-driver overlayd`` makes a network whose pool is
the host's /28. Containers must reach each other across hosts, share the pool with CNI-attached
containers without a duplicate address, leak nothing over many run/rm cycles, and stay connected
while the plugin restarts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from labtools import needs_lab, running_lab, wait_for

from overlayd.dockerplugin.hoststore import OWNER
from overlayd.dockerplugin.server import call
from overlayd.lab.docker import IMAGE, DockerUnavailable, LabDocker
from overlayd.lab.hosts import lab_network_config
from overlayd.lab.namespaces import Lab, LabError, LabHost, sh
from overlayd.lab.plugin import DRIVER, LabDockerPlugin
from overlayd.lab.shell import stop_pid

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]

NETWORK = "ovnet"


@dataclass
class PluginHost:
    host: LabHost
    docker: LabDocker
    plugin: LabDockerPlugin

    @property
    def store(self) -> Path:
        return Path(self.host.dir) / "ipam" / "cbr0"

    def run(self, name: str) -> str:
        """A busybox container on the plugin's network; its address."""
        self.docker.docker("run", "-d", "--name", name, "--network", NETWORK, IMAGE, "/bin/sleep", "3600")
        return self.address(name)

    def address(self, name: str) -> str:
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return self.docker.docker("inspect", "-f", template, name).strip()

    def exec(self, name: str, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "-H", f"unix://{self.docker.socket}", "exec", name, *command]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)

    def ping(self, name: str, address: str, count: int = 3) -> bool:
        return self.exec(name, "ping", "-c", str(count), "-W", "1", address).returncode == 0

    def docker_addresses(self) -> list[str]:
        ours = OWNER.encode() + b"\r\n"
        return sorted(p.name for p in self.store.iterdir() if p.read_bytes().startswith(ours))

    def bridge_mac(self) -> str:
        return str(json.loads(sh("ip", "-j", "link", "show", "cni0", netns=self.host.netns))[0]["address"])

    def plugin_veths(self) -> list[str]:
        links = json.loads(sh("ip", "-j", "link", "show", netns=self.host.netns))
        return [link["ifname"] for link in links if link["ifname"].startswith(("ovd", "ovc"))]


@pytest.fixture(scope="module")
def plugin_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, list[PluginHost]]]:
    config = json.dumps({**json.loads(lab_network_config()), "SubnetLen": 28})
    with running_lab(tmp_path_factory, hosts=2, network_config=config) as lab:
        hosts: list[PluginHost] = []
        try:
            for host in lab.hosts:
                docker = LabDocker(host.netns, Path(host.dir) / "docker")
                plugin = LabDockerPlugin.beside(docker, lab.cni_conflist(host))
                hosts.append(PluginHost(host, docker, plugin))
                try:
                    docker.start(("--bridge=none",))
                except DockerUnavailable as exc:
                    pytest.skip(str(exc))
                docker.import_busybox()
                plugin.start()
                docker.docker("network", "create", "-d", DRIVER, "--ipam-driver", DRIVER, NETWORK)
            hosts[0].run("d1")
            hosts[1].run("d2")
            yield lab, hosts
        finally:
            for each in hosts:
                each.docker.destroy()
                each.plugin.stop()
                assert not each.docker.leftover_pids(), f"dockerd in {each.host.netns} left processes"


def test_containers_reach_each_other_across_hosts_with_cni_gateway_and_mtu(plugin_lab) -> None:  # type: ignore[no-untyped-def]
    _, (h1, h2) = plugin_lab
    a1, a2 = h1.address("d1"), h2.address("d2")
    for each, address in ((h1, a1), (h2, a2)):
        subnet = IPv4Interface(each.host.subnet_env()["FLANNEL_SUBNET"])
        assert IPv4Address(address) in subnet.network, f"{address} outside {subnet.network}"
        mtu = each.host.subnet_env()["FLANNEL_MTU"]
        link = each.exec("d1" if each is h1 else "d2", "ip", "-o", "link", "show", "eth0").stdout
        assert f"mtu {mtu} " in link, link
        routes = each.exec("d1" if each is h1 else "d2", "ip", "route").stdout
        assert f"default via {subnet.ip} dev eth0" in routes, routes
        assert f"198.18.0.0/16 via {subnet.ip} dev eth0" in routes, routes
        bridge = sh("ip", "-o", "addr", "show", "cni0", netns=each.host.netns)
        assert f"inet {subnet} " in bridge, bridge
    assert h1.ping("d1", a2), "h1's Docker container cannot reach h2's"
    assert h2.ping("d2", a1), "h2's Docker container cannot reach h1's"


def test_docker_and_cni_containers_share_the_pool_without_a_duplicate(plugin_lab) -> None:  # type: ignore[no-untyped-def]
    lab, (h1, h2) = plugin_lab
    addresses = {"c1": lab.add_container(h1.host, "c1")}
    addresses["m1"] = h1.run("m1")
    addresses["c2"] = lab.add_container(h1.host, "c2")
    addresses["m2"] = h1.run("m2")
    docker_side = [a for name, a in addresses.items() if name.startswith("m")]
    assert len(set(addresses.values())) == len(addresses), f"duplicate address on one host: {addresses}"
    held = sorted(p.name for p in h1.store.iterdir() if re.fullmatch(r"[\d.]+", p.name))
    assert set(addresses.values()) <= set(held), (addresses, held)
    assert set(docker_side) <= set(h1.docker_addresses())
    assert h1.ping("m1", addresses["c1"]), "a Docker container cannot reach a CNI one on its bridge"
    assert lab.ping(LabHost("c2", lab.container_ns("c2"), "", ""), addresses["m2"]), "CNI cannot reach Docker"
    assert h2.ping("d2", addresses["c2"]), "h2's Docker container cannot reach h1's CNI container"
    for name in ("m1", "m2"):
        h1.docker.docker("rm", "-f", name)
    for name in ("c1", "c2"):
        lab.del_container(h1.host, name)


def test_twenty_run_and_rm_cycles_on_a_28_leak_nothing(plugin_lab) -> None:  # type: ignore[no-untyped-def]
    """A /28 holds 13 container addresses: a leak of one per cycle would exhaust it before the 20th."""
    _, (h1, _) = plugin_lab
    before = (h1.docker_addresses(), h1.plugin_veths(), h1.bridge_mac())
    for cycle in range(20):
        address = h1.run(f"cycle{cycle}")
        assert address, f"cycle {cycle}: no address"
        assert h1.bridge_mac() == before[2], f"cycle {cycle}: the bridge took a port's MAC"
        h1.docker.docker("rm", "-f", f"cycle{cycle}")
    # the bridge's MAC too: one that followed its ports would leave containers' gateway entry stale
    assert (h1.docker_addresses(), h1.plugin_veths(), h1.bridge_mac()) == before
    state = json.loads(h1.plugin.state_file.read_text())
    assert len(state["endpoints"]) == len(before[0]), state


def test_no_ping_lost_while_the_plugin_restarts_and_the_next_run_works(plugin_lab) -> None:  # type: ignore[no-untyped-def]
    _, (h1, h2) = plugin_lab
    target = h2.address("d2")
    pinger = subprocess.Popen(
        ["docker", "-H", f"unix://{h1.docker.socket}", "exec", "d1", "ping", "-c", "40", "-i", "0.1", target],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        for each in (h1, h2):
            each.plugin.stop()
            each.plugin.start()
        out, _ = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    assert " 0% packet loss" in out, out
    after = h1.run("after-restart")
    assert h1.ping("after-restart", target), "a container started after the restart cannot reach h2"
    h1.docker.docker("rm", "-f", "after-restart")
    assert after not in h1.docker_addresses()


@pytest.mark.parametrize(
    ("method", "body", "named"),
    [
        ("NetworkDriver.Nonsense", {}, "unknown method 'NetworkDriver.Nonsense'"),
        ("NetworkDriver.CreateNetwork", [], "must be a JSON object"),
        ("NetworkDriver.CreateNetwork", {"NetworkID": "x/../y"}, "NetworkID 'x/../y' is not a Docker ID"),
        ("NetworkDriver.Join", {"NetworkID": "a" * 64, "EndpointID": "b" * 64}, "endpoint bbbbbbbbbbbb"),
        ("IpamDriver.RequestPool", {"Pool": "10.0.0.0/8"}, "Pool 10.0.0.0/8 is not this host's subnet"),
        ("IpamDriver.RequestPool", {"V6": True}, "IPv6 pools are not served"),
        ("IpamDriver.RequestAddress", {"PoolID": "nonsense"}, "PoolID 'nonsense' is not an IPv4 network"),
    ],
)
def test_a_bad_request_gets_an_error_naming_it_and_the_plugin_serves_on(plugin_lab, method, body, named) -> None:  # type: ignore[no-untyped-def]  # noqa: E501
    _, (h1, _) = plugin_lab
    status, reply = call(h1.plugin.socket, method, body)
    assert status != 200 and named in reply["Err"], reply
    implements = {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert call(h1.plugin.socket, "Plugin.Activate", None) == (200, implements)


def test_a_network_without_the_ipam_driver_is_refused_with_the_fix(plugin_lab) -> None:  # type: ignore[no-untyped-def]
    _, (h1, _) = plugin_lab
    done = subprocess.run(
        ["docker", "-H", f"unix://{h1.docker.socket}", "network", "create", "-d", DRIVER, "--subnet",
         "198.19.7.0/24", "wrongnet"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--ipam-driver overlayd" in done.stderr, done.stderr


def test_cni_add_and_del_take_a_docker_container_name(plugin_lab, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``docker run --net=none`` then ``overlayd cni add NAME``: the container joins the same pool
    and bridge; DEL after ``docker stop`` still finds ADD's cache by Docker's container ID."""
    lab, (h1, h2) = plugin_lab
    h1.docker.docker("run", "-d", "--name", "n1", "--net=none", IMAGE, "/bin/sleep", "3600")
    container_id = h1.docker.docker("inspect", "-f", "{{.Id}}", "n1").strip()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{h1.docker.socket}")
    address = json.loads(lab.cni(h1.host, "add", "n1"))["ips"][0]["address"].split("/")[0]
    cache = Path(h1.host.dir) / "cni-cache" / f"cbr0-{container_id}-eth0"
    assert cache.exists()
    assert h1.ping("n1", h2.address("d2")), "a --net=none container attached by name cannot reach h2"
    assert h2.ping("d2", address)
    assert h1.ping("n1", h1.address("d1")), "it cannot reach the plugin's container on its own bridge"
    h1.docker.docker("stop", "-t", "0", "n1")
    with pytest.raises(LabError, match="Docker container n1 is not running"):
        lab.cni(h1.host, "add", "n1")
    lab.cni(h1.host, "del", "n1")
    assert not cache.exists() and not (h1.store / address).exists()
    h1.docker.docker("rm", "-f", "n1")


def test_a_second_network_without_subnet_fails_at_once_naming_it_and_works_with_it(plugin_lab) -> None:  # type: ignore[no-untyped-def]
    """cni0 now routes the subnet, which dockerd's overlap check refuses for a pool it did not
    name; the plugin says so instead of letting dockerd ask for ever."""
    _, (h1, _) = plugin_lab
    create = ["network", "create", "-d", DRIVER, "--ipam-driver", DRIVER]
    done = subprocess.run(["docker", "-H", f"unix://{h1.docker.socket}", *create, "second"],
                          capture_output=True, text=True, check=False, timeout=30)  # fmt: skip
    subnet = IPv4Interface(h1.host.subnet_env()["FLANNEL_SUBNET"]).network
    assert done.returncode != 0 and f"--subnet {subnet}" in done.stderr, done.stderr
    h1.docker.docker(*create, "--subnet", str(subnet), "second")
    h1.docker.docker("run", "-d", "--name", "s1", "--network", "second", IMAGE, "/bin/sleep", "3600")
    assert h1.ping("s1", h1.address("d1"))
    h1.docker.docker("rm", "-f", "s1")
    h1.docker.docker("network", "rm", "second")


def test_a_dockerd_restart_leaves_the_plugin_and_the_store_consistent(plugin_lab) -> None:  # type: ignore[no-untyped-def]
    """dockerd stops its containers when it stops: their endpoints and addresses go; a container
    with a restart policy comes back on a new endpoint and reaches the other host again."""
    _, (h1, h2) = plugin_lab
    h1.docker.docker("run", "-d", "--name", "r1", "--restart", "always", "--network", NETWORK, IMAGE,
                     "/bin/sleep", "3600")  # fmt: skip
    stop_pid(h1.docker.pid, signal.SIGTERM, 60)
    h1.docker.start(("--bridge=none",))
    wait_for(lambda: h1.docker.docker("inspect", "-f", "{{.State.Running}}", "r1").strip() == "true", 60,
             "r1 restarted by dockerd")  # fmt: skip
    assert h1.docker_addresses() == [h1.address("r1")], "a stopped container kept its address"
    state = json.loads(h1.plugin.state_file.read_text())
    assert len(state["endpoints"]) == 1 and len(state["networks"]) == 1, state
    assert len(h1.plugin_veths()) == 1, h1.plugin_veths()
    assert h1.ping("r1", h2.address("d2")), "the restarted container cannot reach h2"
    h1.docker.docker("rm", "-f", "r1")
    h1.docker.docker("start", "d1")
