"""End to end in the namespace lab: convergence, joins, departures, self-repair, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from labtools import needs_lab, wait_for

from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh

pytestmark = [needs_lab, pytest.mark.root]


def host(lab: Lab, name: str) -> LabHost:
    return next(h for h in lab.hosts if h.name == name)


def subnet_of(h: LabHost) -> str:
    """The host's subnet in lease-key form, e.g. 198.18.46.0-24."""
    gateway = h.subnet_env()["FLANNEL_SUBNET"]
    return f"{h.flannel_address()}-{gateway.split('/')[1]}"


def routes(h: LabHost) -> str:
    return sh("ip", "-4", "route", "show", "dev", "flannel.1", netns=h.netns, check=False)


def neighs(h: LabHost) -> str:
    return sh("ip", "-4", "neigh", "show", "dev", "flannel.1", "nud", "permanent", netns=h.netns, check=False)


def fdb(h: LabHost) -> str:
    return sh("bridge", "fdb", "show", "dev", "flannel.1", netns=h.netns, check=False)


def vtep_mac(h: LabHost) -> str:
    link = json.loads(sh("ip", "-j", "link", "show", "flannel.1", netns=h.netns))
    return link[0]["address"]


def lease_value(lab: Lab, key: str) -> dict:
    out = lab.etcd().etcdctl("get", f"{ETCD_PREFIX}/subnets/{key}", "--print-value-only")
    return json.loads(out) if out.strip() else {}


def test_three_hosts_converge_and_ping_each_other(lab: Lab) -> None:
    table, ok = lab.ping_table()
    assert ok, table
    h1 = host(lab, "h1")
    env = h1.subnet_env()
    assert env["FLANNEL_NETWORK"] == "198.18.0.0/16"
    assert env["FLANNEL_MTU"] == "1450"  # veth underlay 1500 - 50
    assert env["FLANNEL_IPMASQ"] == "false"
    value = lease_value(lab, subnet_of(h1))
    assert value == {
        "PublicIP": h1.ip,
        "PublicIPv6": None,
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": vtep_mac(h1)},
    }
    link = json.loads(sh("ip", "-d", "-j", "link", "show", "flannel.1", netns=h1.netns))[0]
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["local"], info["port"], info.get("learning")) == (1, h1.ip, 8472, False)
    assert link["mtu"] == 1450


def test_fourth_host_is_programmed_on_the_others(lab: Lab) -> None:
    h4 = lab.add_host()
    lab.wait_converged(timeout=30)
    target = h4.flannel_address()
    assert target is not None
    for other in lab.hosts[:3]:
        assert f"{target}/24 via {target} " in routes(other)
        assert lab.ping(other, target, count=2), f"{other.name} cannot reach {h4.name}"


def test_deleted_flannel_device_and_entries_are_repaired(lab: Lab) -> None:
    h1, h2 = host(lab, "h1"), host(lab, "h2")
    peer = h2.flannel_address()
    peer_mac = vtep_mac(h2)
    sh("ip", "route", "del", f"{peer}/24", netns=h1.netns)
    wait_for(lambda: f"{peer}/24 via {peer}" in routes(h1), 10, "the peer route to come back")
    sh("ip", "neigh", "del", peer, "dev", "flannel.1", netns=h1.netns)
    wait_for(lambda: f"{peer} lladdr {peer_mac}" in neighs(h1), 10, "the neighbour to come back")
    sh("bridge", "fdb", "del", peer_mac, "dev", "flannel.1", "dst", h2.ip, netns=h1.netns)
    wait_for(lambda: f"{peer_mac} dst {h2.ip}" in fdb(h1), 10, "the FDB entry to come back")
    mac_before = vtep_mac(h1)
    sh("ip", "link", "del", "flannel.1", netns=h1.netns)
    wait_for(lambda: f"{peer}/24 via {peer}" in routes(h1), 10, "flannel.1 and its routes to come back")
    assert vtep_mac(h1) == mac_before, "the VTEP MAC must survive re-creation of the device"
    assert lab.ping(h1, peer, count=3), "overlay broken after the repair"


def test_stale_entries_are_removed(lab: Lab) -> None:
    h1 = host(lab, "h1")
    stale = "198.18.250.0"
    sh("ip", "route", "add", f"{stale}/24", "via", stale, "dev", "flannel.1", "onlink", netns=h1.netns)
    stale_mac = "02:00:00:00:00:99"
    sh("bridge", "fdb", "append", stale_mac, "dev", "flannel.1", "dst", "192.0.2.250", netns=h1.netns)
    wait_for(lambda: stale not in routes(h1), 10, "the stale route to be removed")
    wait_for(lambda: stale_mac not in fdb(h1), 10, "the stale FDB entry to be removed")


def test_peer_mac_change_replaces_neighbour_and_fdb(lab: Lab) -> None:
    h1 = host(lab, "h1")
    key = "198.18.251.0-24"
    etcd = lab.etcd()
    lease_id = etcd.etcdctl("lease", "grant", "600").split()[1]
    old, new = "02:aa:00:00:00:01", "02:aa:00:00:00:02"
    for mac in (old, new):
        value = json.dumps(
            {"PublicIP": "192.0.2.99", "PublicIPv6": None, "BackendType": "vxlan",
             "BackendData": {"VNI": 1, "VtepMAC": mac}},
            separators=(",", ":"),
        )  # fmt: skip
        etcd.etcdctl("put", f"{ETCD_PREFIX}/subnets/{key}", value, f"--lease={lease_id}")
        wait_for(lambda mac=mac: f"198.18.251.0 lladdr {mac}" in neighs(h1), 10, f"neighbour with {mac}")
    assert old not in fdb(h1) and old not in neighs(h1), "stale MAC left behind"
    assert f"{new} dst 192.0.2.99" in fdb(h1)
    etcd.etcdctl("lease", "revoke", lease_id)
    wait_for(lambda: "198.18.251.0" not in routes(h1), 10, "the expired peer's route to go")
    assert new not in fdb(h1)


def test_restart_keeps_subnet_and_mac(lab: Lab) -> None:
    h2 = host(lab, "h2")
    subnet, mac = subnet_of(h2), vtep_mac(h2)
    lab.stop_agent(h2)
    assert lab.ping(host(lab, "h1"), h2.flannel_address() or "", count=2), "SIGTERM must keep the data path"
    lab.start_agent(h2)
    lab.wait_converged(timeout=30)
    assert subnet_of(h2) == subnet
    assert vtep_mac(h2) == mac
    assert lease_value(lab, subnet)["BackendData"]["VtepMAC"] == mac


def test_sighup_rechecks_instead_of_ending_the_agent(lab: Lab) -> None:
    """HUP is what operators and log rotation send; by default it would end the agent with a
    status systemd counts as clean, so Restart=on-failure would leave the node unmanaged."""
    h1 = host(lab, "h1")
    os.kill(h1.pid, signal.SIGHUP)
    wait_for(lambda: "SIGHUP: checking the network config" in h1.log_file.read_text(), 10, "the SIGHUP line")
    assert subprocess.run(["kill", "-0", str(h1.pid)], check=False).returncode == 0, "SIGHUP ended the agent"
    assert lab.ping(h1, host(lab, "h2").flannel_address() or "", count=2)


def test_deleted_own_lease_is_reacquired_in_process(lab: Lab) -> None:
    h3 = host(lab, "h3")
    key = subnet_of(h3)
    pid = h3.pid
    lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")
    wait_for(lambda: lease_value(lab, key), 15, "h3 to re-acquire its subnet")
    assert h3.pid == pid and subprocess.run(["kill", "-0", str(pid)], check=False).returncode == 0
    lab.wait_converged(timeout=30)


def test_stopped_host_whose_lease_is_deleted_disappears(lab: Lab) -> None:
    h3 = host(lab, "h3")
    key, address = subnet_of(h3), h3.flannel_address()
    lab.stop_agent(h3, signal.SIGKILL)
    lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")
    for other in (host(lab, "h1"), host(lab, "h2")):
        wait_for(lambda other=other: f"{address}/24" not in routes(other), 10, f"{other.name} to drop h3")


def test_etcd_outage_keeps_data_path_and_repairs_then_resumes(lab: Lab) -> None:
    h1, h2 = host(lab, "h1"), host(lab, "h2")
    peer = h2.flannel_address() or ""
    lab.stop_etcd()
    try:
        assert lab.ping(h1, peer, count=2), "data path must survive an etcd outage"
        sh("ip", "route", "del", f"{peer}/24", netns=h1.netns)
        wait_for(lambda: f"{peer}/24 via {peer}" in routes(h1), 10, "a repair from memory while etcd is down")
    finally:
        lab.start_etcd()
    h5 = lab.add_host()
    lab.wait_converged(timeout=40)  # the watch came back: every host learned of h5
    assert lab.ping(h1, h5.flannel_address() or "", count=2)
