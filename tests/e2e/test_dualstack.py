"""Dual-stack networks in the lab: every pair of hosts and containers over both families, the IPv6
entries repaired like the IPv4 ones, an agent restart without lost pings, bad IPv6 halves
ignored, and an IPv4-only network turned dual-stack without restarting the agents."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import (
    ip6,
    lease_values,
    log_mark,
    log_since,
    metric,
    needs_lab,
    put_json_lease,
    running_lab,
    sigkill_and_restart,
    status_json,
    wait_for,
)

from overlayd.lab.hosts import ETCD_PREFIX, lab_network_config
from overlayd.lab.namespaces import Lab, LabHost, sh
from overlayd.lab.traffic import PingProbe

pytestmark = needs_lab

DUAL_CONFIG = lab_network_config(ipv6=True)


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Three converged dual-stack hosts with one container each (h1c1, h2c1, h3c1)."""
    with running_lab(tmp_path_factory, hosts=3, ipv6=True, network_config=DUAL_CONFIG) as lab:
        lab.add_containers(1)
        yield lab


def v6_peer_entries(host: LabHost, peer: LabHost) -> dict[str, bool]:
    """Whether ``host`` holds its route, neighbour and FDB entry for ``peer``'s IPv6 half."""
    gateway = peer.flannel_ipv6_address()
    subnet = peer.subnet_env()["FLANNEL_IPV6_SUBNET"]
    network = f"{gateway}/{subnet.split('/')[1]}"
    return {
        "route": f"{network} via {gateway}" in ip6(host, "route", "show", "dev", "flannel-v6.1"),
        "neigh": f"{gateway} lladdr" in ip6(host, "neigh", "show", "dev", "flannel-v6.1"),
        "fdb": f"dst {peer.ipv6} self permanent" in sh("bridge", "fdb", "show", "dev", "flannel-v6.1",
                                                      netns=host.netns),
    }  # fmt: skip


def test_all_pairs_ping_over_both_families_hosts_and_containers(dual: Lab) -> None:
    hosts_table, hosts_ok = dual.ping_table()
    containers_table, containers_ok = dual.container_ping_table()
    assert hosts_ok, hosts_table
    assert containers_ok, containers_table
    assert "IPv6" in hosts_table and "IPv6" in containers_table
    # The CNI plugin gave every container both addresses, from its host's two subnets.
    for host in dual.hosts:
        env = host.subnet_env()
        assert env["FLANNEL_IPV6_NETWORK"] == "2001:db8:1000::/48"
        prefix = env["FLANNEL_IPV6_SUBNET"].split("::")[0]
        assert dual.hosts and host.containers6[f"{host.name}c1"].startswith(prefix)
    lines = dual.hosts[0].subnet_file.read_text().splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
        "FLANNEL_MTU", "FLANNEL_IPMASQ",
    ]  # fmt: skip


def test_leases_are_flanneld_dual_stack_keys_with_public_ipv6_and_backend_v6_data(dual: Lab) -> None:
    values = lease_values(dual)
    assert len(values) == 3
    for host in dual.hosts:
        key = next(k for k, v in values.items() if v["PublicIP"] == host.ip)
        v4, v6 = key.split("&")
        assert v4 == f"{host.flannel_address()}-24" and v6 == f"{host.flannel_ipv6_address()}-64"
        value = values[key]
        assert list(value) == ["PublicIP", "PublicIPv6", "BackendType", "BackendData", "BackendV6Data"]
        assert value["PublicIPv6"] == host.ipv6
        mac6 = (Path(host.dir) / "state" / "vtep-mac-v6-1").read_text().strip()
        assert value["BackendV6Data"] == {"VNI": 1, "VtepMAC": mac6} != value["BackendData"]


def test_status_and_metrics_show_both_families(dual: Lab) -> None:
    h1 = dual.hosts[0]
    status = status_json(dual, h1, "--cluster")
    own = status["own_lease"]
    assert own["ipv6_subnet"] == f"{h1.flannel_ipv6_address()}/64" and own["public_ipv6"] == h1.ipv6
    assert status["device"]["name"] == "flannel.1" and status["device"]["ipv6_name"] == "flannel-v6.1"
    assert len(status["device"]["routes"]) == 4  # two peers, two families
    assert [lease["programmed"] for lease in status["leases"]].count(True) == 2
    options = (f"--etcd-endpoints={dual.etcd_endpoint}", f"--subnet-file={h1.subnet_file}")
    text = sh(sys.executable, "-m", "overlayd", "status", "--cluster", *options, netns=h1.netns)
    assert "and flannel-v6.1" in text and "IPV6 SUBNET" in text and f"public {h1.ipv6}" in text
    assert metric(h1, "overlayd_lease_ipv6_info", subnet=own["ipv6_subnet"], public_ipv6=h1.ipv6,
                  network="2001:db8:1000::/48") == 1  # fmt: skip


def test_deleted_ipv6_route_neighbour_and_fdb_entry_are_repaired(dual: Lab) -> None:
    h1, h2 = dual.hosts[0], dual.hosts[1]
    gateway = h2.flannel_ipv6_address()
    subnet = h2.subnet_env()["FLANNEL_IPV6_SUBNET"].split("/")[1]
    mac = lease_values(dual)
    mac6 = next(v for v in mac.values() if v["PublicIP"] == h2.ip)["BackendV6Data"]["VtepMAC"]
    repairs = metric(h1, "overlayd_repairs_total")
    sh("ip", "-6", "route", "del", f"{gateway}/{subnet}", "dev", "flannel-v6.1", netns=h1.netns)
    sh("ip", "-6", "neigh", "del", gateway, "dev", "flannel-v6.1", netns=h1.netns)
    sh("bridge", "fdb", "del", mac6, "dev", "flannel-v6.1", "dst", h2.ipv6, netns=h1.netns)
    wait_for(lambda: all(v6_peer_entries(h1, h2).values()), 15, "h1 to restore h2's IPv6 entries")
    assert metric(h1, "overlayd_repairs_total") > repairs
    assert dual.ping(h1, h2.flannel_ipv6_address() or "", count=2)


def test_agent_restart_loses_no_ipv6_or_ipv4_ping(dual: Lab, tmp_path: Path) -> None:
    h2 = dual.hosts[1]
    client = dual.container_ns("h1c1")
    keys = lease_values(dual).keys()
    with (
        PingProbe(client, h2.containers6["h2c1"], tmp_path / "ping6.txt") as ping6,
        PingProbe(client, h2.containers["h2c1"], tmp_path / "ping4.txt") as ping4,
    ):
        sigkill_and_restart(dual, h2)
        stats6, stats4 = ping6.stop(), ping4.stop()
    assert stats6.received and stats6.lost == 0, f"IPv6 pings lost across the restart: {stats6}"
    assert stats4.received and stats4.lost == 0, f"IPv4 pings lost across the restart: {stats4}"
    assert lease_values(dual).keys() == keys  # same dual-stack key, both halves


def fake(ip: str, ip6: str | None, n: int) -> dict:
    value: dict = {"PublicIP": ip, "PublicIPv6": ip6, "BackendType": "vxlan",
                   "BackendData": {"VNI": 1, "VtepMAC": f"0a:00:00:00:00:{n:02x}"}}  # fmt: skip
    if ip6:
        value["BackendV6Data"] = {"VNI": 1, "VtepMAC": f"0a:00:00:00:06:{n:02x}"}
    return value


def test_bad_ipv6_halves_are_ignored_and_an_ipv4_only_peer_named(dual: Lab) -> None:
    h1 = dual.hosts[0]
    mark = log_mark(h1)
    outside = metric(h1, "overlayd_bad_leases_total", reason="outside_network")
    bad_ip = metric(h1, "overlayd_bad_leases_total", reason="bad_public_ip")
    keys = ["198.18.250.0-24&2001:db8:2000:fa::-64", "198.18.251.0-24&2001:db8:1000:fb::-64",
            "198.18.252.0-24"]  # fmt: skip
    put_json_lease(dual, keys[0], fake("192.0.2.250", "2001:db8::fa", 0xFA))  # IPv6 subnet outside
    put_json_lease(dual, keys[1], fake("192.0.2.251", "ff02::1", 0xFB))  # a multicast PublicIPv6
    put_json_lease(dual, keys[2], fake("192.0.2.252", None, 0xFC))  # an IPv4-only peer
    try:
        routed = lambda: "198.18.252.0/24" in sh("ip", "route", netns=h1.netns)  # noqa: E731
        wait_for(routed, 10, "the IPv4-only peer's route")
        wait_for(lambda: metric(h1, "overlayd_bad_leases_total", reason="outside_network") > outside, 10,
                 "the outside IPv6 subnet to be counted")  # fmt: skip
        assert metric(h1, "overlayd_bad_leases_total", reason="bad_public_ip") > bad_ip
        logged = log_since(h1, mark)
        assert "IPv6 subnet 2001:db8:2000:fa::/64 is outside IPv6Network 2001:db8:1000::/48" in logged
        assert "PublicIPv6 ff02::1 is a loopback, unspecified, multicast or link-local address" in logged
        assert f"programming only the IPv4 half of peer lease {keys[2]}" in logged
        routes4, routes6 = sh("ip", "route", netns=h1.netns), ip6(h1, "route")
        assert "198.18.250.0/24" not in routes4 and "198.18.251.0/24" not in routes4
        assert "2001:db8:2000:fa::" not in routes6 and "2001:db8:1000:fb::" not in routes6
        all_ok, table = dual.container_ping_table()[1], dual.container_ping_table()[0]
        assert all_ok, table  # everyone else unaffected
    finally:
        for key in keys:
            dual.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")


def test_an_ipv4_only_network_turns_dual_stack_live_without_losing_ipv4(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    with running_lab(tmp_path_factory, hosts=2, ipv6=True) as lab:
        h1, h2 = lab.hosts
        lab.add_containers(1)
        assert not h1.containers6 and "FLANNEL_IPV6_SUBNET" not in h1.subnet_env()
        pids = [host.pid for host in lab.hosts]
        with PingProbe(lab.container_ns("h1c1"), h2.containers["h2c1"], tmp_path / "ping4.txt") as ping4:
            time.sleep(0.5)
            lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", DUAL_CONFIG)
            wait_for(lambda: all("FLANNEL_IPV6_SUBNET" in host.subnet_env() for host in lab.hosts), 40,
                     "every host to take a dual-stack lease")  # fmt: skip
            lab.wait_converged(timeout=30)
            time.sleep(1)
            stats4 = ping4.stop()
        assert stats4.received and stats4.lost == 0, f"IPv4 pings lost across the change: {stats4}"
        assert [host.pid for host in lab.hosts] == pids and lab.running_pids() >= set(pids)  # no restart
        assert all("&" in key for key in lease_values(lab)) and len(lease_values(lab)) == 2
        for host in lab.hosts:
            lab.add_container(host, f"{host.name}c2")
        assert lab.ping(h1, h2.flannel_ipv6_address() or "", count=2)
        # The new containers' IPv6 addresses are usable once the kernel's duplicate detection ends.
        wait_for(lambda: lab.container_ping_table()[1], 15, "every pair of containers to ping, both families")


def test_a_deleted_own_dual_stack_key_is_taken_again_with_both_subnets(dual: Lab) -> None:
    h3 = dual.hosts[2]
    key = next(k for k, v in lease_values(dual).items() if v["PublicIP"] == h3.ip)
    mark = log_mark(h3)
    dual.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")
    wait_for(lambda: key in lease_values(dual) and "holding subnet" in log_since(h3, mark), 20,
             "h3 to lease its two subnets again")  # fmt: skip
    assert lease_values(dual)[key]["PublicIPv6"] == h3.ipv6
    wait_for(lambda: dual.container_ping_table()[1], 15, "every pair of containers to ping, both families")


def test_host_gw_routes_both_families_via_the_peers_public_addresses(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    config = lab_network_config("host-gw", ipv6=True)
    with running_lab(tmp_path_factory, hosts=2, ipv6=True, network_config=config) as lab:
        h1, h2 = lab.hosts
        lab.add_containers(1)
        wait_for(lambda: lab.container_ping_table()[1], 15, "every pair of containers to ping, both families")
        subnet6 = h2.subnet_env()["FLANNEL_IPV6_SUBNET"]
        network6 = f"{h2.flannel_ipv6_address()}/{subnet6.split('/')[1]}"
        assert f"{network6} via {h2.ipv6} dev eth0" in ip6(h1, "route")
        value = next(v for v in lease_values(lab).values() if v["PublicIP"] == h2.ip)
        assert value == {"PublicIP": h2.ip, "PublicIPv6": h2.ipv6, "BackendType": "host-gw"}
        sh("ip", "-6", "route", "del", network6, netns=h1.netns)  # repaired like an IPv4 route
        wait_for(lambda: f"{network6} via {h2.ipv6}" in ip6(h1, "route"), 15, "h1 to restore the IPv6 route")
