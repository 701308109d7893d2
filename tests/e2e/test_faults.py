"""Faults that must not drop established traffic (issue 5, cases 1 and 3-9).

Each test breaks one thing while container c1 (on h1) pings container c2 (on h2) every 50 ms,
some with an iperf3 TCP stream as well, then checks what the agents did and what got lost.
The tests run in file order on one lab; each leaves the lab converged for the next.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from faults import (
    Pair,
    lease_keys,
    pair_lab,
    plane,
    plane_changes,
    put_fake_peer,
    record,
    since,
    subnet_key,
    vtep_mac,
)
from labtools import log_mark, log_since, metric, needs_lab, ready, wait_for

from overlayd.backend.vxlan.mac import mac_path
from overlayd.lab.namespaces import ETCD_PREFIX, LabHost, sh

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]

# The issue asks for 60 s; the suite uses less to stay fast. Documented runs set OVERLAYD_FAULT_OUTAGE=60.
OUTAGE_SECONDS = int(os.environ.get("OVERLAYD_FAULT_OUTAGE", "20"))
ETCD_TROUBLE = ("peer watch", "could not check our lease", "could not re-read", "unreachable")
# Start and end of the outage for the watch, the lease check and the config re-read, and the
# watch stream's own report: however long etcd stays down.
MAX_OUTAGE_LINES = 8


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    yield from pair_lab(tmp_path_factory, hosts=3)


def hosts(pair: Pair) -> tuple[LabHost, LabHost, LabHost]:
    h1, h2, h3 = pair.lab.hosts[:3]
    return h1, h2, h3


def remove_fake_peer(pair: Pair, key: str) -> None:
    """Delete a fake peer's lease and wait until no host has its entries any more.

    Later cases snapshot the hosts' entries as their healthy state, so a peer still being
    removed (a host may be re-listing after an etcd restart) would make that snapshot wrong.
    """
    pair.lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")
    gateway = key.split("-")[0]
    wait_for(
        lambda: all(gateway not in plane(h)["route"] for h in hosts(pair)),
        15,
        f"every host to drop the fake peer {key}",
    )


def fence_etcd(pair: Pair, on: bool) -> None:
    """Reset the hosts' TCP connections to etcd (as a stopped etcd does) while others still use it."""
    ns = pair.lab.etcd_ns
    if on:
        script = (
            "table ip fence {\n chain input {\n type filter hook input priority 0;\n"
            " ip saddr 192.0.2.11-192.0.2.99 tcp dport 2379 reject with tcp reset\n }\n}\n"
        )
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True)
    else:
        sh("nft", "delete", "table", "ip", "fence", netns=ns)


def etcd_trouble_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(marker in line for marker in ETCD_TROUBLE)]


@pytest.mark.slow
def test_1_etcd_outage_keeps_traffic_and_applies_missed_changes(pair: Pair) -> None:
    """etcd stops; when it is back, peers added and removed meanwhile are applied.

    The agents can only miss changes that etcd accepted while they could not reach it. So after
    the outage etcd comes back fenced off from the hosts (connections reset, as when it was
    down) while a peer is added, another removed, and history compacted; then the fence goes
    and each agent must end with exactly the current peers, whatever revision it last saw.
    """
    lab = pair.lab
    agents = hosts(pair)
    put_fake_peer(lab, "198.18.252.0-24", "192.0.2.98", "02:aa:00:00:02:52")
    wait_for(lambda: all("198.18.252.0/24" in plane(h)["route"] for h in agents), 10, "the doomed peer")
    before = {h.name: plane(h) for h in agents}
    marks = {h.name: log_mark(h) for h in agents}
    with pair.ping("etcd-outage") as ping:
        tcp = pair.tcp("etcd-outage", OUTAGE_SECONDS + 10).start()
        try:
            lab.stop_etcd()
            time.sleep(OUTAGE_SECONDS)
            assert {h.name: plane(h) for h in agents} == before, "kernel state changed while etcd was down"
            fence_etcd(pair, on=True)
            try:
                lab.start_etcd()
                put_fake_peer(lab, "198.18.253.0-24", "192.0.2.97", "02:aa:00:00:02:53")
                lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/198.18.252.0-24")
                lab.etcd().compact()
            finally:
                fence_etcd(pair, on=False)
            back = time.monotonic()

            def applied() -> bool:
                return all(
                    "198.18.253.0/24" in (p := plane(h))["route"] and "198.18.252.0" not in p["route"]
                    for h in agents
                )

            wait_for(applied, 30, "every agent to apply the peer added and the peer removed meanwhile")
            recovery = since(back)
        finally:
            tcp_stats = tcp.wait()
        stats = ping.stop()
    logged = {h.name: etcd_trouble_lines(log_since(h, marks[h.name])) for h in agents}
    record(
        f"etcd stopped {OUTAGE_SECONDS} s", stats, recovery,
        logged[agents[0].name][0] if logged[agents[0].name] else "",
        tcp=tcp_stats.__dict__, trouble_lines={name: len(lines) for name, lines in logged.items()},
    )  # fmt: skip
    assert stats.received and stats.lost == 0, f"pings lost during the etcd outage: {stats}"
    assert not tcp_stats.error and tcp_stats.bytes_received, f"TCP stream broke: {tcp_stats}"
    for name, lines in logged.items():
        assert lines, f"{name} did not log that etcd was unreachable"
        # Backing off: a bounded number of lines, not one per attempt or per reconcile pass.
        listing = "\n".join(lines)
        assert len(lines) <= MAX_OUTAGE_LINES, f"{name} logged {len(lines)} lines:\n{listing}"
    remove_fake_peer(pair, "198.18.253.0-24")


def test_3_agent_sigkill_and_restart_keeps_subnet_mac_and_traffic(pair: Pair) -> None:
    lab = pair.lab
    h2 = hosts(pair)[1]
    key, mac = subnet_key(h2), vtep_mac(h2)
    mark = log_mark(h2)
    with pair.ping("sigkill") as ping:
        tcp = pair.tcp("sigkill", 10).start()
        try:
            lab.stop_agent(h2, signal.SIGKILL)
            time.sleep(1)
            started = time.monotonic()
            lab.start_agent(h2)
            wait_for(lambda: ready(h2), 30, "the restarted agent to be ready")
            recovery = since(started)
            lab.wait_converged(timeout=30)
        finally:
            tcp_stats = tcp.wait()
        stats = ping.stop()
    holding = [line for line in log_since(h2, mark).splitlines() if "holding subnet" in line]
    record("agent SIGKILL + restart", stats, recovery, holding[0] if holding else "", tcp=tcp_stats.__dict__)
    assert subnet_key(h2) == key and vtep_mac(h2) == mac
    assert stats.received and stats.lost == 0, f"pings lost across the agent restart: {stats}"
    assert not tcp_stats.error and tcp_stats.bytes_received, f"TCP stream broke: {tcp_stats}"




def test_4_own_lease_deleted_is_reacquired_with_the_same_subnet(pair: Pair) -> None:
    lab = pair.lab
    h2 = hosts(pair)[1]
    key, pid = subnet_key(h2), h2.pid
    mark = log_mark(h2)
    with pair.ping("lease-deleted") as ping:
        started = time.monotonic()
        lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")
        wait_for(lambda: key in lease_keys(lab), 15, f"h2 to re-acquire {key}")
        lab.wait_converged(timeout=30)
        recovery = since(started)
        time.sleep(1)
        stats = ping.stop()
    lost = [line for line in log_since(h2, mark).splitlines() if "lost" in line]
    record("own lease deleted", stats, recovery, lost[0] if lost else "")
    assert h2.pid == pid and os.path.exists(f"/proc/{pid}"), "the agent must re-acquire in process"
    assert subnet_key(h2) == key
    assert stats.received and stats.sent - stats.lost > 0
    assert pair.lab.ping(hosts(pair)[0], h2.flannel_address() or "", count=2)


@pytest.mark.slow
def test_5_vanished_host_expires_and_is_removed_everywhere_else_unchanged(pair: Pair) -> None:
    lab = pair.lab
    agents = hosts(pair)
    h4 = lab.add_host(agent_args=["--subnet-lease-ttl=15"])
    lab.wait_converged(timeout=30)
    key, address = subnet_key(h4), h4.flannel_address()
    others_before = lease_keys(lab) - {key}
    planes_before = {h.name: plane(h) for h in agents}
    marks = {h.name: log_mark(h) for h in agents}
    with pair.ping("host-gone") as ping:
        started = time.monotonic()
        lab.stop_agent(h4, signal.SIGKILL)
        sh("ip", "netns", "del", h4.netns)
        wait_for(lambda: key not in lease_keys(lab), 30, f"h4's lease {key} to expire")

        def removed() -> bool:
            return all(address not in str(plane(h)) and h4.ip not in str(plane(h)) for h in agents)

        wait_for(removed, 15, "every host to remove h4's route, neighbour and FDB entry")
        recovery = since(started)
        stats = ping.stop()
    logged = log_since(agents[0], marks[agents[0].name]).splitlines()
    removals = [line for line in logged if "removed" in line]
    record("host gone (lease TTL 15 s)", stats, recovery, removals[0] if removals else "")
    assert lease_keys(lab) == others_before, "other leases changed"
    for h in agents:
        for kind, text in planes_before[h.name].items():
            assert without(plane(h)[kind], address, h4.ip) == without(text, address, h4.ip), (
                f"{h.name}: {kind} entries other than h4's changed"
            )
    assert stats.received and stats.lost == 0, f"pings lost while h4 went away: {stats}"


def without(text: str, *needles: str) -> set[str]:
    return {line for line in text.splitlines() if not any(needle in line for needle in needles)}


DRIFTS = [
    # (fault, command on h1 (args), what to check restored, repairs label set)
    ("route removed", "route", "route", "add"),
    ("neighbour removed", "neigh", "neigh", "add"),
    ("FDB flushed", "fdb", "fdb", "add"),
    ("firewall table deleted", "firewall", "firewall", "fix"),
    ("MTU changed", "mtu", "device", "fix"),
    ("flannel.1 deleted", "device", "device", "fix"),
]


def break_h1(pair: Pair, what: str) -> None:
    h1, h2, _ = hosts(pair)
    peer = h2.flannel_address() or ""
    commands = {
        "route": ["ip", "route", "del", f"{peer}/24", "dev", "flannel.1"],
        "neigh": ["ip", "neigh", "del", peer, "dev", "flannel.1"],
        "fdb": ["bridge", "fdb", "flush", "dev", "flannel.1"],
        "firewall": ["nft", "delete", "table", "ip", "overlayd"],
        "mtu": ["ip", "link", "set", "flannel.1", "mtu", "1300"],
        "device": ["ip", "link", "del", "flannel.1"],
    }
    sh(*commands[what], netns=h1.netns)


def h1_restored(pair: Pair, healthy: dict[str, str], table: str, mtu: int) -> bool:
    h1 = hosts(pair)[0]
    try:
        link = json.loads(sh("ip", "-j", "link", "show", "flannel.1", netns=h1.netns))[0]
    except Exception:
        return False
    live_table = sh("nft", "list", "table", "ip", "overlayd", netns=h1.netns, check=False)
    current = plane(h1)
    return link["mtu"] == mtu and live_table == table and all(
        sorted(current[k].split("\n")) == sorted(healthy[k].split("\n")) for k in ("route", "neigh")
    ) and all(line in current["fdb"] for line in healthy["fdb"].splitlines() if " dst " in line)


def test_6_drift_is_repaired_within_the_reconcile_interval_and_counted(pair: Pair) -> None:
    h1 = hosts(pair)[0]
    healthy = plane(h1)
    table = sh("nft", "list", "table", "ip", "overlayd", netns=h1.netns)
    mtu = json.loads(sh("ip", "-j", "link", "show", "flannel.1", netns=h1.netns))[0]["mtu"]
    tcp = pair.tcp("drift", 8 * len(DRIFTS)).start()
    try:
        for fault, what, kind, action in DRIFTS:
            repairs = metric(h1, "overlayd_repairs_total", kind=kind, action=action)
            mark = log_mark(h1)
            with pair.ping(f"drift-{what}") as ping:
                time.sleep(0.5)
                started = time.monotonic()
                break_h1(pair, what)
                wait_for(lambda: h1_restored(pair, healthy, table, mtu), 10, f"h1 to repair: {fault}")
                recovery = since(started)
                time.sleep(0.5)
                stats = ping.stop()
            logged = log_since(h1, mark).strip().splitlines()
            record(fault, stats, recovery, logged[0] if logged else "")
            assert metric(h1, "overlayd_repairs_total", kind=kind, action=action) > repairs, (
                f"{fault}: overlayd_repairs_total{{kind={kind!r},action={action!r}}} did not grow"
            )
            assert stats.received, f"{fault}: no ping answered"
    finally:
        tcp_stats = tcp.wait()
    print(json.dumps({"drift tcp": tcp_stats.__dict__}))
    assert not tcp_stats.error and tcp_stats.bytes_received, f"TCP stream broke during the drift: {tcp_stats}"


def test_7_peer_with_a_new_mac_is_updated_everywhere(pair: Pair) -> None:
    lab = pair.lab
    h1, h2, h3 = hosts(pair)
    old = vtep_mac(h3)
    address = h3.flannel_address() or ""
    with pair.ping("new-mac") as ping:
        lab.stop_agent(h3)
        mac_path(pair.lab.dir / "h3" / "state", 1).unlink()
        sh("ip", "link", "del", "flannel.1", netns=h3.netns)
        started = time.monotonic()
        lab.start_agent(h3)
        new = wait_for(lambda: (m := _mac_or_none(h3)) and m != old and m, 30, "h3's new device")
        for h in (h1, h2):
            wait_for(lambda h=h: programmed(h, address, new, h3.ip), 15, f"{h.name} to program h3's new MAC")
            assert old not in str(plane(h)), f"{h.name} kept h3's old MAC {old}"
        recovery = since(started)
        stats = ping.stop()
    record("peer re-created with a new MAC", stats, recovery, f"peer {address}/24 at {h3.ip} (MAC {new})")
    assert lab.ping(h1, address, count=2), "h1 cannot reach h3 after its MAC changed"
    assert stats.received and stats.lost == 0


def programmed(host: LabHost, address: str, mac: str, public_ip: str) -> bool:
    entries = plane(host)
    return f"{address} lladdr {mac}" in entries["neigh"] and f"{mac} dst {public_ip}" in entries["fdb"]


def _mac_or_none(host: LabHost) -> str | None:
    try:
        return vtep_mac(host)
    except Exception:
        return None


def test_8_compaction_past_a_paused_agents_revision_relists_and_converges(pair: Pair) -> None:
    """While h1's agent is frozen, a peer comes, one goes, etcd restarts and compacts its history.

    etcd keeps pushing events to a live watch however far its reader lags (12 MB of events to a
    SIGSTOPped agent were all delivered on SIGCONT), so the watch must be broken for the agent to
    come back to a history it can no longer resume from: an etcd restart does that. On SIGCONT the
    agent must notice, re-list (not resume from its old revision) and converge.
    """
    lab = pair.lab
    h1 = hosts(pair)[0]
    etcd = lab.etcd()
    put_fake_peer(lab, "198.18.254.0-24", "192.0.2.96", "02:aa:00:00:02:54")
    wait_for(lambda: "198.18.254.0/24" in plane(h1)["route"], 10, "h1 to program the doomed peer")
    mark = log_mark(h1)
    with pair.ping("compaction") as ping:
        os.kill(h1.pid, signal.SIGSTOP)
        try:
            lab.stop_etcd()
            lab.start_etcd()
            put_fake_peer(lab, "198.18.249.0-24", "192.0.2.95", "02:aa:00:00:02:49")
            etcd.etcdctl("del", f"{ETCD_PREFIX}/subnets/198.18.254.0-24")
            etcd.compact()
        finally:
            os.kill(h1.pid, signal.SIGCONT)
        started = time.monotonic()

        def converged() -> bool:
            routes = plane(h1)["route"]
            return "198.18.249.0/24" in routes and "198.18.254.0" not in routes

        wait_for(converged, 30, "h1 to re-list and converge after the compaction")
        recovery = since(started)
        stats = ping.stop()
    relisted = [line for line in log_since(h1, mark).splitlines() if "peer snapshot" in line]
    record("compaction past a paused agent's revision", stats, recovery, relisted[0] if relisted else "")
    assert relisted, "h1 did not re-list after the compaction"
    assert stats.received and stats.lost == 0
    remove_fake_peer(pair, "198.18.249.0-24")


def test_9_underlay_link_flap_restores_what_the_kernel_dropped(pair: Pair) -> None:
    lab = pair.lab
    h1, h2, _ = hosts(pair)
    healthy = plane(h2)
    mark = log_mark(h2)
    with pair.ping("link-flap") as ping:
        sh("ip", "link", "set", "eth0", "down", netns=h2.netns)
        time.sleep(1)
        dropped = {kind: text != plane(h2)[kind] for kind, text in healthy.items()}
        time.sleep(4)
        sh("ip", "link", "set", "eth0", "up", netns=h2.netns)
        started = time.monotonic()
        # The lab's default route is the node's own configuration, not the agent's: put it back as
        # the node's network manager would.
        sh("ip", "route", "replace", "default", "via", "192.0.2.1", netns=h2.netns)
        try:
            wait_for(lambda: plane(h2) == healthy, 15, "h2's routes, neighbours and FDB entries to come back")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{plane_changes(healthy, plane(h2))}\nagent log:\n{log_since(h2, mark)[-4000:]}"
            ) from None
        wait_for(lambda: lab.ping(h1, h2.flannel_address() or ""), 15, "h1 to reach h2 again")
        recovery = since(started)
        time.sleep(1)
        stats = ping.stop()
    logged = log_since(h2, mark).strip().splitlines()
    record("underlay link down 5 s", stats, recovery, logged[0] if logged else "", kernel_dropped=dropped)
    assert stats.received and stats.sent - stats.lost > 0
