"""The alloc backend with real agents: flanneld's lease bytes, subnet.env, no device, no peer
programming, and a live switch to vxlan (and back) through the agent's restart."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from labtools import log_mark, log_since, needs_lab, running_lab, wait_for

from overlayd.lab.hosts import ETCD_PREFIX, LAB_NETWORK
from overlayd.lab.namespaces import Lab, LabHost, sh

pytestmark = needs_lab
ALLOC = json.dumps({"Network": LAB_NETWORK, "Backend": {"Type": "alloc", "Port": 9}})  # keys of its own: none
VXLAN = json.dumps({"Network": LAB_NETWORK, "Backend": {"Type": "vxlan"}})


@pytest.fixture(scope="module")
def alloc_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=2, network_config=ALLOC) as lab:
        lab.add_containers(1)
        yield lab


def lease_value(lab: Lab, host: LabHost) -> str:
    subnet = host.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0-")
    return lab.etcd().etcdctl("get", f"{ETCD_PREFIX}/subnets/{subnet}", "--print-value-only").strip()


def links(host: LabHost) -> list[dict]:
    return json.loads(sh("ip", "-d", "-j", "link", "show", netns=host.netns))


def test_the_lease_is_flanneld_alloc_lease_byte_for_byte(alloc_lab: Lab) -> None:
    for host in alloc_lab.hosts:
        assert lease_value(alloc_lab, host) == f'{{"PublicIP":"{host.ip}","PublicIPv6":null}}'


def test_subnet_env_has_the_underlays_whole_mtu_and_no_device_is_made(alloc_lab: Lab) -> None:
    for host in alloc_lab.hosts:
        env = host.subnet_env()
        assert env["FLANNEL_NETWORK"] == LAB_NETWORK and env["FLANNEL_MTU"] == "1500"
        kinds = {link["ifname"]: link.get("linkinfo", {}).get("info_kind") for link in links(host)}
        assert not [name for name in kinds if name.startswith("flannel")], kinds
        assert "vxlan" not in kinds.values()
        status = sh(sys.executable, "-m", "overlayd", "status", f"--etcd-endpoints={alloc_lab.etcd_endpoint}",
                    f"--subnet-file={host.subnet_file}", netns=host.netns)  # fmt: skip
        assert "device      none: the alloc backend makes no device" in status


def test_peers_are_not_programmed(alloc_lab: Lab) -> None:
    h1, h2 = alloc_lab.hosts
    peer_subnet = h2.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0/")
    routes = json.loads(sh("ip", "-4", "-j", "route", "show", netns=h1.netns))
    assert peer_subnet not in [route.get("dst") for route in routes]
    assert f"peer {peer_subnet}" not in log_since(h1, 0)  # no "peer ... at ... (MAC ...)" line
    _, ok = alloc_lab.container_ping_table()
    assert not ok  # nothing carries the traffic: alloc leaves routing to something else


def test_repair_restart_and_bad_input(alloc_lab: Lab) -> None:
    """What alloc has to keep (subnet.env, the firewall's table) is repaired by the next pass; a
    restart keeps the subnet and the lease's bytes; a Backend that is not an object is refused,
    named, and the config in force kept."""
    h1 = alloc_lab.hosts[0]
    env, value = h1.subnet_file.read_text(), lease_value(alloc_lab, h1)
    h1.subnet_file.unlink()
    sh("nft", "delete", "table", "ip", "overlayd", netns=h1.netns)
    wait_for(lambda: h1.subnet_file.exists() and h1.subnet_file.read_text() == env, 30, "subnet.env back")
    table = ("nft", "list", "table", "ip", "overlayd")
    wait_for(lambda: sh(*table, netns=h1.netns, check=False), 30, "the firewall's table back")
    alloc_lab.stop_agent(h1)
    mark = log_mark(h1)
    alloc_lab.start_agent(h1)
    wait_for(lambda: "holding subnet" in log_since(h1, mark), 30, "h1 holding its subnet again")
    assert h1.subnet_file.read_text() == env and lease_value(alloc_lab, h1) == value
    mark = log_mark(h1)
    bad = json.dumps({"Network": LAB_NETWORK, "Backend": "alloc"})
    alloc_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", bad)
    try:
        named = "Backend 'alloc' is not a JSON object"
        wait_for(lambda: named in log_since(h1, mark), 30, "the bad Backend named")
        assert alloc_lab.http_get(h1, "/readyz")[0] == 200 and h1.subnet_file.read_text() == env
    finally:
        alloc_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", ALLOC)


def test_a_node_takes_over_the_lease_flanneld_left(alloc_lab: Lab) -> None:
    """A node switched from flanneld keeps its subnet: the lease carrying its PublicIP, as
    flanneld's alloc backend wrote it, is taken over and written again byte for byte."""
    etcd = alloc_lab.etcd()
    lease_id = etcd.etcdctl("lease", "grant", "86400").split()[1]
    flanneld = '{"PublicIP":"192.0.2.13","PublicIPv6":null}'
    etcd.etcdctl("put", f"{ETCD_PREFIX}/subnets/198.18.200.0-24", flanneld, f"--lease={lease_id}")
    h3 = alloc_lab.add_host(start_agent=False)
    assert h3.ip == "192.0.2.13"
    mark = log_mark(h3) if h3.log_file.exists() else 0
    alloc_lab.start_agent(h3)
    try:
        held = "holding subnet 198.18.200.0/24"
        wait_for(lambda: held in log_since(h3, mark), 30, "h3 holding its old subnet")
        wait_for(lambda: h3.subnet_env().get("FLANNEL_SUBNET") == "198.18.200.1/24", 30, "h3's subnet.env")
        assert lease_value(alloc_lab, h3) == flanneld
    finally:
        alloc_lab.stop_agent(h3)
        h3.pid = 0


def switched_in_place(host: LabHost, mark: int, old: str, new: str) -> None:
    """Wait for ``host``'s agent to switch backend without restarting (same pid)."""
    pid = host.pid
    line = f"switched backend {old} -> {new}"
    wait_for(lambda: line in log_since(host, mark), 30, f"{host.name} switching")
    assert host.pid == pid and "restarting" not in log_since(host, mark)


def test_a_live_switch_to_vxlan_and_back(alloc_lab: Lab) -> None:
    """The agents switch to the new backend in place, come back on vxlan with a device and pings
    across hosts, and on the way back to alloc remove the device again."""
    etcd, running = alloc_lab.etcd(), [host for host in alloc_lab.hosts if host.pid]
    for config, device in ((VXLAN, True), (ALLOC, False)):
        marks = {host.name: log_mark(host) for host in running}
        etcd.etcdctl("put", f"{ETCD_PREFIX}/config", config)
        old, new = ("alloc", "vxlan") if device else ("vxlan", "alloc")
        for host in running:
            switched_in_place(host, marks[host.name], old, new)
        alloc_lab.network_config = config
        alloc_lab.wait_converged(timeout=60)
        for host in running:
            present = any(link["ifname"] == "flannel.1" for link in links(host))
            assert present is device, f"{host.name}: flannel.1 present {present}"
            backend_type = ',"BackendType":"vxlan"' if device else ""
            expected = f'{{"PublicIP":"{host.ip}","PublicIPv6":null{backend_type}'
            assert lease_value(alloc_lab, host).startswith(expected)
        if device:
            wait_for(lambda: alloc_lab.container_ping_table()[1], 30, "container pings over vxlan")
        else:
            assert "backend vxlan: " in log_since(alloc_lab.hosts[0], marks["h1"])
