"""Backend host-gw in the lab: real agents, etcd and CNI containers, routes via peers' PublicIPs.

What flanneld v0.20.2's host-gw does, checked on the kernel and in etcd (the route's every
attribute, the lease's bytes), and where it is weak, better: a deleted route comes back at once
(flanneld: on its 10 s check), a route no lease wants is removed, a peer off the segment is named
with the fix instead of failing a route add on every event.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import log_mark, log_since, metric, needs_lab, running_lab, status_json, wait_for

from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]

CONFIG = json.dumps({"Network": "198.18.0.0/16", "Backend": {"Type": "host-gw"}})
# Generous bounds for what should take well under a second, on a shared 2-core machine.
REPAIR_BOUND = 15.0


@pytest.fixture(scope="module")
def hostgw_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=3, network_config=CONFIG) as lab:
        for host in lab.hosts:
            lab.add_container(host, f"c{host.name}")
        yield lab


def subnet_of(host: LabHost) -> str:
    return host.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0/")


def routes(host: LabHost) -> list[dict]:
    """The host's main-table IPv4 routes, as ``ip -j`` describes them."""
    return json.loads(sh("ip", "-j", "-d", "-4", "route", "show", "table", "main", netns=host.netns))


def route_to(host: LabHost, subnet: str) -> dict | None:
    return next((route for route in routes(host) if route["dst"] == subnet), None)


def flanneld_route(peer: LabHost) -> dict:
    """The route flanneld's host-gw installs for ``peer``: via its PublicIP on eth0, main table,
    protocol boot, universe scope, unicast, no flags."""
    return {
        "type": "unicast", "dst": subnet_of(peer), "gateway": peer.ip, "dev": "eth0",
        "protocol": "boot", "scope": "global", "flags": [],
    }  # fmt: skip


def container_ping(lab: Lab, source: str, target: str, *extra: str) -> subprocess.CompletedProcess:
    ping = ["ping", "-n", "-q", "-W", "1", *extra, target]
    command = ["ip", "netns", "exec", lab.container_ns(source), *ping]
    return subprocess.run(command, capture_output=True, text=True)


def container_ip(lab: Lab, name: str) -> str:
    out = sh("ip", "-j", "-4", "addr", "show", "eth0", netns=lab.container_ns(name))
    return json.loads(out)[0]["addr_info"][0]["local"]


def etcdctl(lab: Lab, *args: str) -> str:
    return lab.etcd().etcdctl(*args)


def test_every_container_reaches_every_other_through_flanneld_s_routes(hostgw_lab: Lab) -> None:
    lab = hostgw_lab
    for host in lab.hosts:
        assert host.subnet_env()["FLANNEL_MTU"] == "1500", "host-gw adds nothing: the interface's MTU"
        for peer in (p for p in lab.hosts if p is not host):
            route, wanted = route_to(host, subnet_of(peer)), flanneld_route(peer)
            assert route is not None and {k: route.get(k) for k in wanted} == wanted
        assert "flannel.1" not in sh("ip", "-br", "link", netns=host.netns)
        key = f"{ETCD_PREFIX}/subnets/{subnet_of(host).replace('/', '-')}"
        value = etcdctl(lab, "get", "--print-value-only", key).strip()
        assert value == f'{{"PublicIP":"{host.ip}","PublicIPv6":null,"BackendType":"host-gw"}}'
    names = [f"c{host.name}" for host in lab.hosts]
    addresses = {name: container_ip(lab, name) for name in names}
    failed = [
        (source, target) for source in names for target in names
        if source != target and container_ping(lab, source, addresses[target], "-c", "2").returncode
    ]  # fmt: skip
    assert not failed, f"container pings failed: {failed}"


def test_status_shows_the_routes_on_the_external_interface(hostgw_lab: Lab) -> None:
    h1, h2 = hostgw_lab.hosts[:2]
    status = status_json(hostgw_lab, h1, "--cluster")
    assert status["device"]["name"] == "eth0" and subnet_of(h2) in status["device"]["routes"]
    assert [row["programmed"] for row in status["leases"] if row["subnet"] == subnet_of(h2)] == [True]


def test_a_deleted_route_is_put_back(hostgw_lab: Lab) -> None:
    h1, h2 = hostgw_lab.hosts[:2]
    before = metric(h1, "overlayd_repairs_total", kind="direct_route", action="add")
    sh("ip", "route", "del", subnet_of(h2), netns=h1.netns)
    wait_for(lambda: route_to(h1, subnet_of(h2)), REPAIR_BOUND, f"the route to {subnet_of(h2)} back on h1")
    assert route_to(h1, subnet_of(h2))["gateway"] == h2.ip
    assert metric(h1, "overlayd_repairs_total", kind="direct_route", action="add") > before


def test_a_route_of_ours_that_no_lease_wants_is_removed(hostgw_lab: Lab) -> None:
    """A route left by a peer that is gone (its lease expired while this agent was down, say)."""
    h1, h2 = hostgw_lab.hosts[:2]
    sh("ip", "route", "add", "198.18.250.0/24", "via", h2.ip, "dev", "eth0", "proto", "boot", netns=h1.netns)
    wait_for(lambda: route_to(h1, "198.18.250.0/24") is None, REPAIR_BOUND, "the stale route removed")
    assert route_to(h1, subnet_of(h2)) is not None and route_to(h1, "0.0.0.0/0") is None
    assert any(route["dst"] == "default" for route in routes(h1)), "the underlay's own routes stay"


@contextlib.contextmanager
def peer_lease(lab: Lab, subnet: str, public_ip: str) -> Iterator[int]:
    """A host-gw lease for ``subnet`` at ``public_ip`` in etcd meanwhile, written by hand; yields
    the position in h1's log from before it was written."""
    key = f"{ETCD_PREFIX}/subnets/{subnet.replace('/', '-')}"
    mark = log_mark(lab.hosts[0])
    etcdctl(lab, "put", key, f'{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"host-gw"}}')
    try:
        yield mark
    finally:
        etcdctl(lab, "del", key)


def test_an_off_segment_peer_is_named_with_the_fix_and_gets_no_route(hostgw_lab: Lab) -> None:
    lab, far = hostgw_lab, "198.18.251.0/24"
    h1 = lab.hosts[0]
    with peer_lease(lab, far, "198.19.0.5") as mark:
        line = wait_for(
            lambda: next((ln for ln in log_since(h1, mark).splitlines() if far in ln), None),
            REPAIR_BOUND, "the off-segment peer named in h1's log",
        )  # fmt: skip
        assert "198.19.0.5" in str(line) and "not on this host's L2 segment" in str(line)
        assert '"Type": "vxlan"' in str(line) and "DirectRouting" in str(line)
        assert route_to(h1, far) is None
        c2 = container_ip(lab, "ch2")
        assert container_ping(lab, "ch1", c2, "-c", "1").returncode == 0, "the other peers are untouched"


def test_a_bad_peer_lease_is_named_and_the_rest_kept(hostgw_lab: Lab) -> None:
    lab = hostgw_lab
    h1 = lab.hosts[0]
    with peer_lease(lab, "198.18.252.0/24", "192.0.2.300") as mark:
        wait_for(lambda: "198.18.252.0-24" in log_since(h1, mark), REPAIR_BOUND, "the bad lease named")
        assert "192.0.2.300" in log_since(h1, mark)
        assert route_to(h1, "198.18.252.0/24") is None
        assert all(route_to(h1, subnet_of(peer)) for peer in lab.hosts[1:])


def test_a_node_whose_own_lease_is_deleted_takes_it_back_in_place(hostgw_lab: Lab) -> None:
    """flanneld's host-gw panics when its lease is deleted; the agent re-acquires the same subnet
    and keeps running, and its containers stay reachable."""
    lab = hostgw_lab
    h2 = lab.hosts[1]
    key = f"{ETCD_PREFIX}/subnets/{subnet_of(h2).replace('/', '-')}"
    value = etcdctl(lab, "get", "--print-value-only", key).strip()
    etcdctl(lab, "del", key)
    wait_for(lambda: etcdctl(lab, "get", "--print-value-only", key).strip() == value, REPAIR_BOUND,
             "h2's lease written again, the same value")  # fmt: skip
    assert _running(h2.pid)
    c2 = container_ip(lab, "ch2")
    wait_for(lambda: container_ping(lab, "ch1", c2, "-c", "1").returncode == 0, REPAIR_BOUND, "ch1 → ch2")


def test_a_host_behind_nat_is_refused_with_the_fix(hostgw_lab: Lab) -> None:
    """flanneld refuses host-gw when the PublicIP is not the interface's address; so do we, with
    the fix, before any lease is written."""
    lab = hostgw_lab
    host = lab.add_host(agent_args=["--public-ip=192.0.2.99"])
    try:
        wait_for(lambda: not _running(host.pid), 60, "the agent behind a NAT to exit")
        log = host.log_file.read_text()
        assert f"PublicIP 192.0.2.99 is not eth0's address {host.ip}" in log and "Drop --public-ip" in log
        assert "Traceback" not in log
        assert "192.0.2.99" not in etcdctl(lab, "get", "--prefix", f"{ETCD_PREFIX}/subnets/")
    finally:
        lab.stop_agent(host)


def test_a_peer_whose_lease_is_gone_loses_its_route(hostgw_lab: Lab) -> None:
    """Last: h3 leaves the lab's cluster for good."""
    lab = hostgw_lab
    h1, h3 = lab.hosts[0], lab.hosts[2]
    gone = subnet_of(h3)
    lab.stop_agent(h3)
    etcdctl(lab, "del", f"{ETCD_PREFIX}/subnets/{gone.replace('/', '-')}")
    wait_for(lambda: route_to(h1, gone) is None, REPAIR_BOUND, f"the route to {gone} removed on h1")
    assert route_to(h1, subnet_of(lab.hosts[1])) is not None


def _ready(host: LabHost) -> bool:
    """Whether the host's agent serves ``/readyz`` with 200 (False while it is not listening)."""
    try:
        return Lab.http_get(host, "/readyz")[0] == 200
    except Exception:  # not listening yet
        return False


def _monitor_routes(host: LabHost) -> subprocess.Popen:
    return subprocess.Popen(
        ["ip", "netns", "exec", host.netns, "ip", "-4", "monitor", "route"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def test_restart_and_flanneld_s_routes_are_adopted_without_a_lost_ping(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The agent stops, its routes are replaced by ones exactly as flanneld installs them (a node
    handed over from flanneld), and a new agent starts: a 20 Hz ping across loses nothing, and the
    routes are not touched (no netlink message about them)."""
    with running_lab(tmp_path_factory, hosts=2, network_config=CONFIG) as lab:
        h1, h2 = lab.hosts
        lab.add_container(h1, "r1")
        lab.add_container(h2, "r2")
        target = container_ip(lab, "r2")
        assert container_ping(lab, "r1", target, "-c", "1").returncode == 0
        ping = subprocess.Popen(
            ["ip", "netns", "exec", lab.container_ns("r1"), "ping", "-n", "-q", "-i", "0.05", "-c", "240",
             "-W", "1", target],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        monitor = None
        try:
            time.sleep(1)
            lab.stop_agent(h1)
            # flanneld's own route: `netlink.RouteAdd` of Dst, Gw and LinkIndex, its library's defaults.
            sh("ip", "route", "replace", subnet_of(h2), "via", h2.ip, "dev", "eth0", "proto", "boot",
               netns=h1.netns)  # fmt: skip
            monitor = _monitor_routes(h1)
            time.sleep(0.5)  # the monitor is listening
            mark = log_mark(h1)
            lab.start_agent(h1)
            wait_for(lambda: _ready(h1), 60, "h1's new agent ready")
            time.sleep(2)  # a timer pass or two after the first
            out, _ = ping.communicate(timeout=60)
        finally:
            ping.kill() if ping.poll() is None else None
            if monitor is not None:
                monitor.terminate()
        seen = monitor.communicate(timeout=10)[0]
        assert " 0% packet loss" in out, f"pings lost across the restart: {out}"
        assert subnet_of(h2) not in seen, f"the adopted route was rewritten: {seen}"
        assert "direct_route" not in log_since(h1, mark)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


def _routed_via(host: LabHost, peer: LabHost) -> str:
    """How ``host`` routes ``peer``'s subnet: "flannel.1", "eth0" (via its PublicIP), or ""."""
    route = route_to(host, subnet_of(peer)) or {}
    if route.get("dev") == "eth0" and route.get("gateway") == peer.ip:
        return "eth0"
    return str(route.get("dev", ""))


def test_a_live_switch_between_vxlan_and_host_gw_keeps_the_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    vxlan = json.dumps({"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}})
    with running_lab(tmp_path_factory, hosts=2, network_config=vxlan) as lab:
        h1, h2 = lab.hosts
        lab.add_container(h1, "s1")
        lab.add_container(h2, "s2")
        addresses = {name: container_ip(lab, name) for name in ("s1", "s2")}
        pids = [host.pid for host in lab.hosts]

        def pings() -> bool:
            return all(
                container_ping(lab, source, addresses[target], "-c", "1").returncode == 0
                for source, target in (("s1", "s2"), ("s2", "s1"))
            )

        for config, via in ((CONFIG, "eth0"), (vxlan, "flannel.1")):
            lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", config)
            wait_for(
                lambda via=via: _routed_via(h1, h2) == via and _routed_via(h2, h1) == via, 60,
                f"routes through {via} on both hosts",
            )  # fmt: skip
            wait_for(pings, 30, f"container pings both ways through {via}")
            for host in lab.hosts:
                links = sh("ip", "-br", "link", netns=host.netns)
                assert ("flannel.1" in links) == (via == "flannel.1"), links
                backend = "host-gw" if via == "eth0" else "vxlan"
                key = f"{ETCD_PREFIX}/subnets/{subnet_of(host).replace('/', '-')}"
                value = json.loads(etcdctl(lab, "get", "--print-value-only", key))
                assert value["BackendType"] == backend and value["PublicIP"] == host.ip
            # The lab restarts no agent: one that exited to restart (as for a new VNI) is gone.
            assert all(_running(pid) for pid in pids), "the agents switched in place, without a restart"
            if via == "flannel.1":  # no host-gw route left behind
                assert not [r for r in routes(h1) if r.get("gateway") == h2.ip and r["dst"] != "default"]
        for host in lab.hosts:
            log = host.log_file.read_text()
            assert "switched backend vxlan -> host-gw" in log and "switched backend host-gw -> vxlan" in log
            assert "Traceback" not in log


def test_a_switch_this_host_cannot_make_keeps_the_old_backend(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A node behind a NAT (here: --public-ip not its address) cannot run host-gw: told to switch,
    it says why once and keeps serving vxlan."""
    vxlan = json.dumps({"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}})
    nat = ("--public-ip=192.0.2.99",)
    with running_lab(tmp_path_factory, hosts=1, agent_args=nat, network_config=vxlan, converge=False) as lab:
        h1 = lab.hosts[0]
        wait_for(lambda: _ready(h1), 60, "h1's agent ready on vxlan")
        mark = log_mark(h1)
        lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", CONFIG)
        refusal = "cannot switch to backend host-gw"
        wait_for(lambda: refusal in log_since(h1, mark), 30, "the refused switch logged")
        for _ in range(2):  # later config checks say nothing more
            os.kill(h1.pid, signal.SIGHUP)
            time.sleep(1)
        log = log_since(h1, mark)
        assert log.count(refusal) == 1 and "PublicIP 192.0.2.99 is not eth0's address" in log, log
        assert _running(h1.pid) and "flannel.1" in sh("ip", "-br", "link", netns=h1.netns)
        key = f"{ETCD_PREFIX}/subnets/{subnet_of(h1).replace('/', '-')}"
        assert json.loads(etcdctl(lab, "get", "--print-value-only", key))["BackendType"] == "vxlan"
