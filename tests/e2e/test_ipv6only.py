"""IPv6-only networks (``EnableIPv4: false``) in the lab: flannel's lease form with one subnet per
host, every pair of hosts and containers over IPv6, the entries repaired, an agent restart without
lost pings, bad leases ignored and named, and host-gw routing via the peers' PublicIPv6."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import (
    ip6,
    log_mark,
    log_since,
    metric,
    needs_lab,
    put_json_lease,
    raw_leases,
    running_lab,
    sigkill_and_restart,
    wait_for,
)

from overlayd.lab.hosts import ETCD_PREFIX, LAB_IPV6_NETWORK, lab_network_config
from overlayd.lab.namespaces import Lab, LabHost, lab_namespaces, random_lab_name, sh
from overlayd.lab.traffic import PingProbe

pytestmark = needs_lab

V6_ONLY_CONFIG = lab_network_config(ipv4=False)
DEVICE = "flannel-v6.1"


@pytest.fixture(scope="module")
def v6lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Three converged IPv6-only hosts with one container each (h1c1, h2c1, h3c1)."""
    with running_lab(tmp_path_factory, hosts=3, ipv6=True, network_config=V6_ONLY_CONFIG) as lab:
        lab.add_containers(1)
        yield lab


def key_of(lab: Lab, host: LabHost) -> str:
    return next(key for key, value in raw_leases(lab).items() if json.loads(value)["PublicIPv6"] == host.ipv6)


def entries(host: LabHost, peer: LabHost) -> dict[str, bool]:
    """Whether ``host`` holds its route, neighbour and FDB entry for ``peer``."""
    gateway = peer.flannel_ipv6_address()
    length = peer.subnet_env()["FLANNEL_IPV6_SUBNET"].split("/")[1]
    fdb = sh("bridge", "fdb", "show", "dev", DEVICE, netns=host.netns)
    return {
        "route": f"{gateway}/{length} via {gateway}" in ip6(host, "route", "show", "dev", DEVICE),
        "neigh": f"{gateway} lladdr" in ip6(host, "neigh", "show", "dev", DEVICE),
        "fdb": f"dst {peer.ipv6} self permanent" in fdb,
    }


def running(pid: int) -> bool:
    """Whether ``pid`` runs (neither gone nor a zombie left for its parent to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def v6_only_value(public_ipv6: str | None, mac: str) -> dict:
    """An IPv6-only lease value as flanneld v0.20.2 writes it."""
    return {"PublicIP": "0.0.0.0", "PublicIPv6": public_ipv6, "BackendType": "vxlan",
            "BackendV6Data": {"VNI": 1, "VtepMAC": mac}}  # fmt: skip


def test_all_pairs_ping_over_ipv6_alone_hosts_and_containers(v6lab: Lab) -> None:
    hosts_table, hosts_ok = v6lab.ping_table()
    containers_table, containers_ok = v6lab.container_ping_table()
    assert hosts_ok and "IPv6" in hosts_table, hosts_table
    assert containers_ok and "IPv6" in containers_table, containers_table
    for host in v6lab.hosts:
        # Lease checks (every 2 s here) find the IPv6-only lease fitting: never taken for lost.
        assert " lost (" not in host.log_file.read_text()
        # flanneld's WriteSubnetFile for an IPv6-only network: no IPv4 lines at all.
        keys = [line.split("=")[0] for line in host.subnet_file.read_text().splitlines()]
        assert keys == ["FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"]
        assert host.subnet_env()["FLANNEL_IPV6_NETWORK"] == LAB_IPV6_NETWORK
        # Containers have their IPv6 address alone; no IPv4 device and no IPv4 table.
        assert not host.containers and host.containers6[f"{host.name}c1"].startswith("2001:db8:1000:")
        assert "flannel.1" not in sh("ip", "-o", "link", netns=host.netns)
        tables = sh("nft", "list", "tables", netns=host.netns)
        assert "table ip6 overlayd" in tables and "table ip overlayd" not in tables


def test_leases_are_flanneld_ipv6_only_ones_with_a_subnet_per_host(v6lab: Lab) -> None:
    leases = raw_leases(v6lab)
    assert len(leases) == 3
    subnets = {key.split("&")[1] for key in leases}
    assert len(subnets) == 3  # flanneld v0.20.2 would give the second host the first one's
    for host in v6lab.hosts:
        key = key_of(v6lab, host)
        assert key.startswith("0.0.0.0-0&2001:db8:1000:") and key.endswith("-64")
        mac = sh("cat", f"/sys/class/net/{DEVICE}/address", netns=host.netns).strip()
        # Byte for byte what flanneld writes: its field order, no BackendData.
        assert leases[key] == (
            f'{{"PublicIP":"0.0.0.0","PublicIPv6":"{host.ipv6}","BackendType":"vxlan",'
            f'"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac}"}}}}'
        )
        subnet = host.subnet_env()["FLANNEL_IPV6_SUBNET"]
        assert key.split("&")[1] == f"{host.flannel_ipv6_address()}-{subnet.split('/')[1]}"


def test_deleted_route_neighbour_and_fdb_entry_are_repaired(v6lab: Lab) -> None:
    h1, h2 = v6lab.hosts[0], v6lab.hosts[1]
    gateway = h2.flannel_ipv6_address() or ""
    length = h2.subnet_env()["FLANNEL_IPV6_SUBNET"].split("/")[1]
    mac = json.loads(raw_leases(v6lab)[key_of(v6lab, h2)])["BackendV6Data"]["VtepMAC"]
    repairs = metric(h1, "overlayd_repairs_total")
    sh("ip", "-6", "route", "del", f"{gateway}/{length}", "dev", DEVICE, netns=h1.netns)
    sh("ip", "-6", "neigh", "del", gateway, "dev", DEVICE, netns=h1.netns)
    sh("bridge", "fdb", "del", mac, "dev", DEVICE, "dst", h2.ipv6, netns=h1.netns)
    assert not any(entries(h1, h2).values())
    wait_for(lambda: all(entries(h1, h2).values()), 15, "h1 to restore h2's entries")
    assert metric(h1, "overlayd_repairs_total") > repairs
    assert v6lab.ping(h1, gateway, count=2)


def test_agent_restart_loses_no_ping_and_keeps_the_lease(v6lab: Lab, tmp_path: Path) -> None:
    h2 = v6lab.hosts[1]
    key = key_of(v6lab, h2)
    with PingProbe(v6lab.container_ns("h1c1"), h2.containers6["h2c1"], tmp_path / "ping6.txt") as ping:
        sigkill_and_restart(v6lab, h2)
        stats = ping.stop()
    assert stats.received and stats.lost == 0, f"pings lost across the restart: {stats}"
    assert key_of(v6lab, h2) == key


def test_bad_leases_are_ignored_and_named_and_a_flanneld_peer_is_programmed(v6lab: Lab) -> None:
    h1, h2 = v6lab.hosts[0], v6lab.hosts[1]
    mark = log_mark(h1)
    counts = {reason: metric(h1, "overlayd_bad_leases_total", reason=reason)
              for reason in ("outside_network", "bad_public_ip", "vtep_mac_taken")}  # fmt: skip
    h2_mac = json.loads(raw_leases(v6lab)[key_of(v6lab, h2)])["BackendV6Data"]["VtepMAC"]
    bad = {
        # An IPv4 (dual-stack) lease, as a node still on an older config writes it.
        "198.18.250.0-24&2001:db8:1000:fa::-64": {
            "PublicIP": "192.0.2.250", "PublicIPv6": "2001:db8::fa", "BackendType": "vxlan",
            "BackendData": {"VNI": 1, "VtepMAC": "0a:00:00:00:00:fa"},
            "BackendV6Data": {"VNI": 1, "VtepMAC": "0a:00:00:00:06:fa"},
        },
        "0.0.0.0-0&2001:db8:1000:fb::-64": v6_only_value(None, "0a:00:00:00:06:fb"),  # no PublicIPv6
        "0.0.0.0-0&2001:db8:1000:fc::-64": v6_only_value("2001:db8::fc", h2_mac),  # h2's VTEP MAC
    }  # fmt: skip
    good = "0.0.0.0-0&2001:db8:1000:fd::-64"  # a flanneld node's lease: programmed
    for key, value in bad.items():
        put_json_lease(v6lab, key, value)
    put_json_lease(v6lab, good, v6_only_value("2001:db8::fd", "0a:00:00:00:06:fd"))
    try:
        wait_for(lambda: "2001:db8:1000:fd::/64 via 2001:db8:1000:fd::" in ip6(h1, "route"), 10,
                 "the flanneld peer's route")  # fmt: skip
        for reason, before in counts.items():
            wait_for(lambda r=reason, b=before: metric(h1, "overlayd_bad_leases_total", reason=r) > b, 10,
                     f"a {reason} lease to be counted")  # fmt: skip
        logged = log_since(h1, mark)
        assert "has IPv4 subnet 198.18.250.0/24 in an IPv6-only network (EnableIPv4 false)" in logged
        assert "0.0.0.0-0&2001:db8:1000:fb::-64 has no PublicIPv6" in logged
        assert f"VtepMAC {h2_mac} at PublicIP 2001:db8::fc is already claimed" in logged
        routes = ip6(h1, "route")
        assert all(f"2001:db8:1000:{n}::/64" not in routes for n in ("fa", "fb", "fc"))
        assert all(entries(h1, h2).values())  # the rival took nothing from h2
        table, ok = v6lab.container_ping_table()
        assert ok, table  # everyone else unaffected
    finally:
        for key in (*bad, good):
            v6lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")


def test_host_gw_routes_via_the_peers_public_ipv6(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = lab_network_config("host-gw", ipv4=False)
    with running_lab(tmp_path_factory, hosts=2, ipv6=True, network_config=config) as lab:
        h1, h2 = lab.hosts
        lab.add_containers(1)
        wait_for(lambda: lab.container_ping_table()[1], 15, "both containers to ping over IPv6")
        subnet6 = h2.subnet_env()["FLANNEL_IPV6_SUBNET"]
        network6 = f"{h2.flannel_ipv6_address()}/{subnet6.split('/')[1]}"
        assert f"{network6} via {h2.ipv6} dev eth0" in ip6(h1, "route")
        assert raw_leases(lab)[key_of(lab, h2)] == (
            f'{{"PublicIP":"0.0.0.0","PublicIPv6":"{h2.ipv6}","BackendType":"host-gw"}}'
        )
        sh("ip", "-6", "route", "del", network6, netns=h1.netns)
        wait_for(lambda: f"{network6} via {h2.ipv6}" in ip6(h1, "route"), 15, "h1 to restore the route")


def test_turning_ipv4_on_restarts_the_agents_which_keep_their_ipv6_subnets(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_lab(tmp_path_factory, hosts=2, ipv6=True, network_config=V6_ONLY_CONFIG) as lab:
        subnets6 = {host.name: host.subnet_env()["FLANNEL_IPV6_SUBNET"] for host in lab.hosts}
        marks = {host.name: log_mark(host) for host in lab.hosts}
        lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", lab_network_config(ipv6=True))
        for host in lab.hosts:
            # The lease key changes form, so the agent exits for the unit to restart it (75).
            wait_for(lambda h=host: not running(h.pid), 20, f"{host.name}'s agent to exit")
            logged = log_since(host, marks[host.name])
            assert "network config changed EnableIPv4 false -> true; restarting" in logged
            lab.start_agent(host)
        dual_keys = lambda: [key for key in raw_leases(lab) if key.startswith("198.18.")]  # noqa: E731
        wait_for(lambda: len(dual_keys()) == 2, 30, "both agents to lease both halves")
        assert len(raw_leases(lab)) == 2  # the IPv6-only keys went, not left to expire in a day
        written = lambda: all("FLANNEL_SUBNET" in host.subnet_env() for host in lab.hosts)  # noqa: E731
        wait_for(written, 15, "both agents to write their dual-stack subnet.env")
        lab.wait_converged(timeout=30)
        for host in lab.hosts:
            assert host.subnet_env()["FLANNEL_IPV6_SUBNET"] == subnets6[host.name]
            assert host.subnet_env()["FLANNEL_SUBNET"].startswith("198.18.")
        table, ok = lab.ping_table()
        assert ok and "IPv6" in table, table


def test_turning_ipv4_off_is_held_as_the_renumbering_it_is(tmp_path_factory: pytest.TempPathFactory) -> None:
    dual = lab_network_config(ipv6=True)
    with running_lab(tmp_path_factory, hosts=2, ipv6=True, network_config=dual) as lab:
        h1 = lab.hosts[0]
        before = raw_leases(lab)
        mark = log_mark(h1)
        lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", V6_ONLY_CONFIG)
        wait_for(lambda: metric(h1, "overlayd_config_mismatch") == 1, 15, "h1 to hold the IPv6-only config")
        assert "IPv6-only" in log_since(h1, mark)
        assert raw_leases(lab) == before and all(host.pid for host in lab.hosts)
        table, ok = lab.ping_table()
        assert ok, table  # both families still carried under the config in force


def test_lab_up_refuses_an_ipv6_only_network_on_an_ipv4_only_backend_at_once(tmp_path: Path) -> None:
    name = random_lab_name()
    argv = [sys.executable, "-m", "overlayd", "lab", "up", "--name", name, "--root", str(tmp_path),
            "--ipv6-only", "--backend", "udp", "--hosts", "2", "--containers", "0"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done
    assert "Backend.Type 'udp' carries IPv4 only, and EnableIPv4 false makes the network" in done.stderr
    assert not lab_namespaces(name), "nothing was started"


def test_a_key_taken_over_by_another_public_ipv6_is_left_to_it_and_another_leased(v6lab: Lab) -> None:
    """What a flanneld node starting in an IPv6-only network does (it takes the first 0.0.0.0
    lease for its own): this host names its rewritten key and leases another subnet."""
    h3 = v6lab.hosts[2]
    key = key_of(v6lab, h3)
    mark = log_mark(h3)
    stranger = v6_only_value("2001:db8::fe", "0a:00:00:00:06:fe")
    put_json_lease(v6lab, key, stranger)
    try:
        wait_for(lambda: key_of(v6lab, h3) != key, 20, "h3 to lease another subnet")
        logged = log_since(h3, mark)
        old_subnet = key.split("&")[1].rsplit("-", 1)[0]
        assert f"PublicIPv6 2001:db8::fe claims our IPv6 subnet {old_subnet}" in logged
        assert json.loads(raw_leases(v6lab)[key])["PublicIPv6"] == "2001:db8::fe"  # left to its new holder
        wait_for(lambda: h3.subnet_env()["FLANNEL_IPV6_SUBNET"].split("::")[0] in key_of(v6lab, h3), 15,
                 "h3's subnet.env to name its new subnet")  # fmt: skip
        v6lab.wait_converged(timeout=30)
        table, ok = v6lab.ping_table()
        assert ok, table
    finally:
        v6lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")
