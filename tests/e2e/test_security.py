"""The VXLAN ingress allowlist against an intruder on the underlay.

VXLAN has no authentication: anyone who can send UDP to port 8472 on a host can inject frames
into its overlay. The intruder here is a namespace on the lab underlay (no agent, no lease) that
builds its own VXLAN device aimed at h1, with h1's VTEP MAC in its neighbour table. A probe table
in h1's namespace counts decapsulated packets from the intruder's inner source address on
``flannel.1``: zero while the allowlist is on (the drop rule's counter rises instead, and the agent
names the intruder), more than zero once h1's agent runs with the allowlist off — which proves the
probe can see the attack.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from labtools import log_mark, log_since, metric, needs_lab, running_lab, wait_for

from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh

pytestmark = [needs_lab, pytest.mark.root]

INTRUDER_IP = IPv4Address("192.0.2.250")  # underlay, outside the hosts' range
INTRUDER_OVERLAY_IP = "198.19.250.1"  # inside 198.18.0.0/15, outside the lab's Network
INTRUDER_PINGS = 3
PROBE = (
    "table ip probe {\n\tchain prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n"
    f'\t\tiifname "flannel.1" ip saddr {INTRUDER_OVERLAY_IP} counter\n\t}}\n}}\n'
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=2) as lab:
        yield lab


def counter_packets(netns: str, table: str, pattern: str) -> int:
    """Packets counted so far by the rule of ``table`` whose text contains ``pattern``."""
    listing = sh("nft", "list", "table", "ip", table, netns=netns, check=False)
    for line in listing.splitlines():
        if pattern in line and (match := re.search(r"counter packets (\d+)", line)):
            return int(match[1])
    return -1  # no such rule


def add_intruder(lab: Lab, target: LabHost) -> str:
    """An agent-less node on the underlay with a VXLAN device aimed at ``target``'s flannel.1."""
    netns = f"{lab.name}-intruder"
    lab._make_node(netns, "intruder", INTRUDER_IP)
    link = json.loads(sh("ip", "-j", "link", "show", "flannel.1", netns=target.netns))[0]
    target_overlay = target.flannel_address()
    assert target_overlay is not None
    sh("ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "8472", "remote", target.ip,
       "local", str(INTRUDER_IP), "dev", "eth0", "nolearning", netns=netns)  # fmt: skip
    sh("ip", "addr", "add", f"{INTRUDER_OVERLAY_IP}/32", "dev", "vx0", netns=netns)
    sh("ip", "link", "set", "vx0", "up", netns=netns)
    sh("ip", "neigh", "add", target_overlay, "lladdr", link["address"], "dev", "vx0", "nud", "permanent",
       netns=netns)  # fmt: skip
    sh("ip", "route", "add", f"{target_overlay}/32", "dev", "vx0", netns=netns)
    return netns


def intruder_ping(netns: str, target: str) -> bool:
    out = sh("ping", "-c", str(INTRUDER_PINGS), "-i", "0.2", "-W", "1", target, netns=netns, check=False)
    return f"{INTRUDER_PINGS} received" in out or " 0% packet loss" in out


def test_allowlist_drops_intruder_and_passes_peers(lab: Lab) -> None:
    h1, h2 = lab.hosts[0], lab.hosts[1]
    target = h1.flannel_address()
    assert target is not None

    def h1_table() -> str:
        return sh("nft", "list", "table", "ip", "overlayd", netns=h1.netns, check=False)

    assert "vxlan_peers" in h1_table()
    intruder = add_intruder(lab, h1)
    probe = lab.dir / "probe.nft"
    probe.write_text(PROBE)
    sh("nft", "-f", str(probe), netns=h1.netns)

    assert lab.ping(h2, target, count=3), "a peer's VXLAN traffic must pass the allowlist"
    dropped_before = counter_packets(h1.netns, "overlayd", "@vxlan_peers")
    assert not intruder_ping(intruder, target)
    assert counter_packets(h1.netns, "probe", INTRUDER_OVERLAY_IP) == 0, "intruder's packets reached h1"
    assert counter_packets(h1.netns, "overlayd", "@vxlan_peers") >= dropped_before + INTRUDER_PINGS
    # The operator learns who was dropped (a node sending from another address than its
    # PublicIP would be cut off the same way), once, and monitoring counts it.
    wait_for(lambda: metric(h1, "overlayd_vxlan_ingress_dropped_sources") == 1, 15, "the drop gauge")
    warnings = [line for line in h1.log_file.read_text().splitlines() if "allowlist dropped" in line]
    assert len(warnings) == 1 and f"packets from {INTRUDER_IP}:" in warnings[0], warnings
    assert "--vxlan-ingress-allowlist=false" in warnings[0]

    # A host joining later is allowed by the fast path (an element added before its entries).
    h3 = lab.add_host()
    wait_for(lambda: h3.flannel_address(), 30, "h3's subnet.env")
    lab.wait_converged(timeout=60)
    wait_for(lambda: lab.ping(h3, target), 30, "h3 reaching h1 through the allowlist")
    assert h3.ip in sh("nft", "list", "set", "ip", "overlayd", "vxlan_peers", netns=h1.netns)

    # The same attack with the allowlist off gets through: the probe above can see it.
    lab.stop_agent(h1, signal.SIGTERM)
    h1.agent_args.append("--vxlan-ingress-allowlist=false")
    lab.start_agent(h1)
    wait_for(lambda: "vxlan_peers" not in h1_table(), 30, "h1's allowlist to be removed")
    intruder_ping(intruder, target)
    assert counter_packets(h1.netns, "probe", INTRUDER_OVERLAY_IP) >= INTRUDER_PINGS
    assert lab.ping(h2, target, count=3)


# ---- hostile and careless leases --------------------------------------------------------------
# Each case writes a lease no honest agent would into the lab's etcd, checks that h1 names it
# once and refuses it, and that h1 still reaches h2, repairs itself and says it is ready.

ATTACKER_IP = "192.0.2.77"  # on the underlay, no host there
ATTACKER_MAC = "0a:00:00:00:00:77"


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=3) as lab:
        yield lab


def vtep_mac(host: LabHost) -> str:
    return json.loads(sh("ip", "-j", "link", "show", "flannel.1", netns=host.netns))[0]["address"]


def lease_key(host: LabHost) -> str:
    subnet = host.subnet_env()["FLANNEL_SUBNET"]
    return f"{host.flannel_address()}-{subnet.split('/')[1]}"


def free_key(lab: Lab) -> str:
    """A /24 of the lab's Network that no host holds."""
    taken = {host.flannel_address() for host in lab.hosts}
    return next(f"198.18.{n}.0-24" for n in range(250, 0, -1) if f"198.18.{n}.0" not in taken)


def put_lease(lab: Lab, key: str, public_ip: str = ATTACKER_IP, mac: str = ATTACKER_MAC) -> None:
    value = {"PublicIP": public_ip, "PublicIPv6": None, "BackendType": "vxlan",
             "BackendData": {"VNI": 1, "VtepMAC": mac}}  # fmt: skip
    lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/subnets/{key}", json.dumps(value))


def del_lease(lab: Lab, key: str) -> None:
    lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")


def allowed(host: LabHost) -> str:
    """The host's VXLAN allowlist as nft lists it ("" without the table)."""
    return sh("nft", "list", "set", "ip", "overlayd", "vxlan_peers", netns=host.netns, check=False)


def skipped_lines(host: LabHost, key: str, mark: int) -> list[str]:
    return [line for line in log_since(host, mark).splitlines() if f"skipping peer lease {key} " in line]


def assert_unharmed(lab: Lab, h1: LabHost, h2: LabHost) -> None:
    """h1 reaches h2 with h2's own neighbour and FDB entry, and says it is ready."""
    gateway = h2.flannel_address()
    neigh = sh("ip", "neigh", "show", str(gateway), "dev", "flannel.1", netns=h1.netns)
    assert vtep_mac(h2) in neigh, f"h2's gateway neighbour on h1 was taken: {neigh}"
    fdb = sh("bridge", "fdb", "show", "dev", "flannel.1", netns=h1.netns)
    assert f"{vtep_mac(h2)} dst {h2.ip} self permanent" in fdb, fdb
    assert lab.ping(h1, str(gateway), count=2), "h1 cannot reach h2"
    assert Lab.http_get(h1, "/readyz")[0] == 200


def test_a_lease_with_a_broadcast_vtep_mac_stops_nothing(trio: Lab) -> None:
    """The kernel refuses a broadcast VtepMAC's FDB entry; the lease is skipped and named, and
    every other part of the pass goes on: a deleted table and subnet.env come back."""
    h1, h2 = trio.hosts[0], trio.hosts[1]
    key, mark = free_key(trio), log_mark(h1)
    bad_before = metric(h1, "overlayd_bad_leases_total", reason="bad_vtep_mac")
    put_lease(trio, key, mac="ff:ff:ff:ff:ff:ff")
    try:
        wait_for(lambda: skipped_lines(h1, key, mark), 15, "h1 to name the lease")
        assert "VtepMAC ff:ff:ff:ff:ff:ff is the broadcast address" in skipped_lines(h1, key, mark)[0]
        assert metric(h1, "overlayd_bad_leases_total", reason="bad_vtep_mac") == bad_before + 1
        sh("nft", "delete", "table", "ip", "overlayd", netns=h1.netns)
        h1.subnet_file.unlink()
        wait_for(lambda: str(h2.ip) in allowed(h1), 15, "the table back, with h2 allowed")
        wait_for(lambda: h1.subnet_file.exists(), 15, "subnet.env rewritten")
        assert "ff:ff:ff:ff:ff:ff" not in sh("bridge", "fdb", "show", "dev", "flannel.1", netns=h1.netns)
        assert_unharmed(trio, h1, h2)
        assert len(skipped_lines(h1, key, mark)) == 1, "named once, not on every pass"
        assert metric(h1, "overlayd_entries_failing") == 0
    finally:
        del_lease(trio, key)


@pytest.mark.parametrize("prefixlen", [25, 32])
def test_a_lease_inside_a_peers_subnet_takes_nothing(trio: Lab, prefixlen: int) -> None:
    """A /25 inside h2's /24 would take over h2's gateway neighbour, a /32 one container."""
    h1, h2 = trio.hosts[0], trio.hosts[1]
    key, mark = f"{h2.flannel_address()}-{prefixlen}", log_mark(h1)
    put_lease(trio, key)
    try:
        lines = wait_for(lambda: skipped_lines(h1, key, mark), 15, "h1 to name the lease")
        assert "subnet_size" in lines[0] and "is not a /24" in lines[0], lines
        time.sleep(3)  # a full pass (every 2 s) has run with the lease present
        assert_unharmed(trio, h1, h2)
        assert ATTACKER_IP not in allowed(h1)
    finally:
        del_lease(trio, key)


def test_a_second_key_for_a_peers_subnet_loses_to_the_older(trio: Lab) -> None:
    """The same /24 under a second key (with an IPv6 part) and another MAC: one winner, the older."""
    h1, h2 = trio.hosts[0], trio.hosts[1]
    key, mark = f"{lease_key(h2)}&2001:db8:77::-64", log_mark(h1)
    put_lease(trio, key)
    try:
        lines = wait_for(lambda: skipped_lines(h1, key, mark), 15, "h1 to name the lease")
        assert "subnet_taken" in lines[0] and f"older lease {lease_key(h2)}" in lines[0], lines
        time.sleep(3)
        assert_unharmed(trio, h1, h2)
        assert metric(h1, "overlayd_bad_leases_total", reason="subnet_taken") >= 1
        assert ATTACKER_IP not in allowed(h1)
    finally:
        del_lease(trio, key)


def test_a_lease_claiming_another_hosts_vtep_mac_redirects_nothing(trio: Lab) -> None:
    h1, h2 = trio.hosts[0], trio.hosts[1]
    key, mark = free_key(trio), log_mark(h1)
    put_lease(trio, key, mac=vtep_mac(h2))
    try:
        lines = wait_for(lambda: skipped_lines(h1, key, mark), 15, "h1 to name the lease")
        assert "vtep_mac_taken" in lines[0] and f"older lease {lease_key(h2)} at {h2.ip}" in lines[0], lines
        time.sleep(3)
        assert_unharmed(trio, h1, h2)
        assert f"dst {ATTACKER_IP}" not in sh("bridge", "fdb", "show", "dev", "flannel.1", netns=h1.netns)
        assert ATTACKER_IP not in allowed(h1), "a lease that lost its MAC claim may not send VXLAN"
    finally:
        del_lease(trio, key)


@pytest.mark.parametrize(
    ("public_ip", "reason"),
    [("127.0.0.1", "bad_public_ip"), ("192.0.2.255", "bad_public_ip"), ("0.0.0.0", "bad_public_ip"),
     ("224.0.0.5", "bad_public_ip"), ("own", "own_public_ip")],
)  # fmt: skip
def test_an_impossible_public_ip_never_enters_the_allowlist(trio: Lab, public_ip: str, reason: str) -> None:
    h1, h2 = trio.hosts[0], trio.hosts[1]
    public_ip = str(h1.ip) if public_ip == "own" else public_ip
    key, mark = free_key(trio), log_mark(h1)
    put_lease(trio, key, public_ip=public_ip)
    try:
        lines = wait_for(lambda: skipped_lines(h1, key, mark), 15, "h1 to name the lease")
        assert reason in lines[0] and f"PublicIP {public_ip} " in lines[0], lines
        time.sleep(3)
        peers = allowed(h1)
        assert f" {public_ip}" not in peers.replace(f" {h2.ip}", ""), peers
        assert key.split("-")[0] not in sh("ip", "route", "show", "dev", "flannel.1", netns=h1.netns)
        assert_unharmed(trio, h1, h2)
    finally:
        del_lease(trio, key)


def test_a_step_that_keeps_failing_leaves_the_others_working_and_the_node_unready(trio: Lab) -> None:
    """Another VXLAN device on VNI 1 (port 8472) makes creating flannel.1 fail on every pass:
    the firewall and subnet.env are still repaired, /readyz says which step fails, and the
    node is ready again once the cause is gone."""
    h1, h2 = trio.hosts[0], trio.hosts[1]
    mark = log_mark(h1)
    sh("ip", "link", "delete", "flannel.1", netns=h1.netns)
    sh("ip", "link", "add", "vx-block", "type", "vxlan", "id", "1", "dstport", "8472", "dev", "eth0",
       netns=h1.netns)  # fmt: skip
    try:
        wait_for(lambda: Lab.http_get(h1, "/readyz")[0] == 503, 15, "h1 to turn unready")
        assert "full pass failing at step device" in Lab.http_get(h1, "/readyz")[1]
        assert metric(h1, "overlayd_reconcile_step_failures_total", step="device") >= 1
        sh("nft", "delete", "table", "ip", "overlayd", netns=h1.netns)
        h1.subnet_file.unlink()
        wait_for(lambda: str(h2.ip) in allowed(h1), 15, "the table back, with h2 allowed")
        wait_for(lambda: h1.subnet_file.exists(), 15, "subnet.env rewritten")
        failing = [line for line in log_since(h1, mark).splitlines() if "device step failed" in line]
        assert len(failing) == 1, failing  # logged when it starts failing, not on every pass
    finally:
        sh("ip", "link", "delete", "vx-block", netns=h1.netns, check=False)
    wait_for(lambda: Lab.http_get(h1, "/readyz")[0] == 200, 15, "h1 ready again")
    wait_for(lambda: trio.ping(h1, str(h2.flannel_address())), 15, "h1 reaching h2 again")
    assert "full pass: device step failed: working again" in log_since(h1, mark)


def test_a_fresh_start_has_the_allowlist_before_the_device(trio: Lab) -> None:
    """As after a reboot: no table and no device. The table with every peer in its allowlist is
    written before flannel.1 exists, so no VXLAN from a non-peer is accepted even for a moment."""
    h1, h2 = trio.hosts[0], trio.hosts[1]
    trio.stop_agent(h1, signal.SIGTERM)
    sh("nft", "delete", "table", "ip", "overlayd", netns=h1.netns)
    sh("ip", "link", "delete", "flannel.1", netns=h1.netns)
    mark = log_mark(h1)
    trio.start_agent(h1)
    wait_for(lambda: h1.flannel_address() and trio.ping(h1, str(h2.flannel_address())), 30, "h1 back")
    lines = log_since(h1, mark).splitlines()
    table = next(i for i, line in enumerate(lines) if "created nftables table ip overlayd" in line)
    device = next(i for i, line in enumerate(lines) if "flannel.1: created flannel.1" in line)
    assert table < device, "\n".join(lines[min(table, device) : max(table, device) + 1])
    assert f"VXLAN allowlist {len(trio.hosts) - 1} peers" in lines[table], lines[table]
