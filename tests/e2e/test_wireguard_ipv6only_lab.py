"""The wireguard backend in an IPv6-only network (EnableIPv4 false), as flanneld runs it: Mode
separate (its default) on ``flannel-wg-v6`` alone, Mode ipv6 on ``flannel-wg``. Real agents,
wireguard-go, containers with IPv6 addresses alone, and a capture on the underlay bridge.

One lab of three hosts with one container each serves the Mode separate tests, in file order; the
Mode ipv6 test has a lab of two hosts of its own.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import (
    log_mark,
    log_since,
    needs_lab,
    raw_leases,
    ready,
    running_lab,
    sigkill_and_restart,
    status_json,
    underlay_capture,
    wait_for,
)
from wgtools import (
    DEVICE,
    DEVICE6,
    PORT,
    PORT6,
    all_v6_peers_know,
    public_key,
    remove_peer_by_hand_and_see_it_back,
    subnet6,
    wg,
    wireguard_lab,
)

from overlayd.lab.hosts import lab_network_config
from overlayd.lab.namespaces import Lab, LabHost, lab_namespaces, random_lab_name, sh
from overlayd.lab.traffic import PingProbe

pytestmark = [needs_lab, pytest.mark.root]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with wireguard_lab(tmp_path_factory, ipv4=False) as lab:
        yield lab


def links(host: LabHost) -> str:
    return sh("ip", "-o", "link", "show", netns=host.netns)


def test_every_pair_of_containers_meets_over_ipv6_on_flannel_wg_v6_alone(lab: Lab) -> None:
    wait_for(lambda: lab.container_ping_table()[1], 15, "every pair of containers to ping over IPv6")
    table, ok = lab.container_ping_table()
    assert ok and "IPv6" in table, table
    wait_for(lambda: all_v6_peers_know(lab), 10, "every host's peers on flannel-wg-v6")
    h1 = lab.hosts[0]
    for host in lab.hosts:
        assert DEVICE6 in links(host) and f"{DEVICE}:" not in links(host), links(host)
        # No IPv4 anywhere: no ip table, the ip6 one guarding ListenPortV6 for the peers' PublicIPv6s.
        assert "table ip overlayd" not in sh("nft", "list", "tables", netns=host.netns)
    assert wg(h1, "show", DEVICE6, "listen-port").strip() == str(PORT6)
    link6 = sh("ip", "addr", "show", DEVICE6, netns=h1.netns)
    assert "mtu 1420" in link6 and f"inet6 {h1.flannel_ipv6_address()}/128" in link6, link6
    assert "2001:db8:1000::/48 dev flannel-wg-v6" in sh("ip", "-6", "route", netns=h1.netns)
    table6 = sh("nft", "list", "table", "ip6", "overlayd", netns=h1.netns)
    assert f"udp dport {PORT6} ip6 saddr != @wireguard_peers" in table6, table6
    assert all(other.ipv6 in table6 for other in lab.hosts[1:]), table6
    # overlayd status reads the one device's routes and peers.
    device = status_json(lab, h1)["device"]
    assert (device["name"], device["ipv6_name"], len(device["routes"])) == (DEVICE6, None, 2), device
    assert device["tunnel_peers"] == 2, device


def test_the_lease_is_flanneld_s_ipv6_only_one_byte_for_byte(lab: Lab) -> None:
    leases = raw_leases(lab)
    assert len(leases) == 3
    for host in lab.hosts:
        key = next(key for key, value in leases.items() if json.loads(value)["PublicIPv6"] == host.ipv6)
        assert key == f"0.0.0.0-0&{subnet6(host).replace('/', '-')}"
        # PublicIP 0.0.0.0, no BackendData, the key of flannel-wg-v6 as BackendV6Data.
        assert leases[key] == (
            f'{{"PublicIP":"0.0.0.0","PublicIPv6":"{host.ipv6}","BackendType":"wireguard",'
            f'"BackendV6Data":{{"PublicKey":"{public_key(host, DEVICE6)}"}}}}'
        )


def test_every_peer_is_probed_reachable_on_its_ipv6_subnet(lab: Lab) -> None:
    h1 = lab.hosts[0]
    targets = {host.flannel_ipv6_address() for host in lab.hosts[1:]}

    def all_reachable() -> list[dict] | None:
        status, body = lab.http_get(h1, "/peers")
        found = json.loads(body)["peers"] if status == 200 else []
        return found if len(found) == 2 and all(p["state"] == "reachable" for p in found) else None

    found = wait_for(all_reachable, 30, "h1 to probe both peers reachable")
    assert isinstance(found, list)
    assert {peer["target"] for peer in found} == targets
    assert all([path["family"] for path in peer["paths"]] == ["ipv6"] for peer in found), found


def test_the_underlay_carries_only_wireguard_udp_to_listen_port_v6(lab: Lab) -> None:
    """A capture on the underlay bridge while containers ping each other: only UDP between the
    hosts' IPv6 addresses on ListenPortV6 (and the underlay's neighbour discovery); no IPv4 but
    etcd's, and no container address anywhere."""
    with underlay_capture(lab, "underlay6only", "(ip and not host 192.0.2.2) or ip6") as lines:
        for source in lab.hosts:
            name = next(iter(source.containers6))
            for target in lab.hosts:
                if source is not target:
                    for address in target.containers6.values():
                        sh("ping", "-c", "2", "-i", "0.2", "-W", "1", address, netns=lab.container_ns(name))
    hosts6 = "|".join(re.escape(host.ipv6) for host in lab.hosts)
    wireguard6 = re.compile(rf"IP6 ({hosts6})\.{PORT6} > ({hosts6})\.{PORT6}: UDP, length \d+$")
    discovery = re.compile(r"ICMP6, (neighbor (solicitation|advertisement)|router solicitation|multicast "
                           "listener)")
    carried = [line for line in lines if wireguard6.search(line)]
    assert len(carried) >= 12, "\n".join(lines[:20])  # 6 pairs x 2 pings, each way
    strays = [line for line in lines if not wireguard6.search(line) and not discovery.search(line)]
    assert not strays, "\n".join(strays[:10])
    assert "2001:db8:1000:" not in "\n".join(lines)


def test_a_peer_removed_by_hand_from_flannel_wg_v6_comes_back(lab: Lab) -> None:
    remove_peer_by_hand_and_see_it_back(lab, DEVICE6)


def test_an_agent_restart_loses_no_ping_and_keeps_key_and_lease(lab: Lab, tmp_path: Path) -> None:
    h2 = lab.hosts[1]
    key, leases = public_key(h2, DEVICE6), raw_leases(lab)
    client = lab.container_ns("h1c1")
    with PingProbe(client, h2.containers6["h2c1"], tmp_path / "ping6.txt") as ping:
        sigkill_and_restart(lab, h2)
        stats = ping.stop()
    assert stats.received and stats.lost == 0, f"pings lost across the restart: {stats}"
    assert public_key(h2, DEVICE6) == key and raw_leases(lab) == leases


def test_a_flannel_wg_left_by_an_earlier_run_is_deleted(lab: Lab) -> None:
    """A TUN device named flannel-wg (what a wireguard-go of an IPv4 run leaves) is deleted when
    the agent starts in the IPv6-only network; flannel-wg-v6 carries on."""
    h3 = lab.hosts[2]
    lab.stop_agent(h3)
    sh("ip", "tuntap", "add", "dev", DEVICE, "mode", "tun", netns=h3.netns)
    assert f"{DEVICE}:" in links(h3)
    mark = log_mark(h3)
    lab.start_agent(h3)
    wait_for(lambda: ready(h3), 30, "h3's agent ready again")
    wait_for(lambda: f"{DEVICE}:" not in links(h3), 10, "the stray flannel-wg gone")
    assert f"deleted {DEVICE} (the network is IPv6-only: Mode separate uses {DEVICE6})" in log_since(h3, mark)
    wait_for(lambda: all_v6_peers_know(lab), 15, "every host's peers on flannel-wg-v6")
    assert lab.ping(h3, lab.hosts[0].flannel_ipv6_address() or "", count=2)


def test_mode_ipv6_carries_the_ipv6_only_network_on_flannel_wg(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Mode ipv6, as flanneld: flannel-wg alone, on ListenPort, each peer at its PublicIPv6."""
    config = json.loads(lab_network_config("wireguard", ipv4=False))
    config["Backend"]["Mode"] = "ipv6"
    with running_lab(tmp_path_factory, hosts=2, ipv6=True, network_config=json.dumps(config)) as lab:
        h1, h2 = lab.hosts
        lab.add_containers(1)
        wait_for(lambda: lab.container_ping_table()[1], 15, "every pair of containers to ping over IPv6")
        wait_for(lambda: all_v6_peers_know(lab, DEVICE, PORT), 10, "every host's peers on flannel-wg")
        assert all(DEVICE6 not in links(host) for host in lab.hosts)
        link = sh("ip", "addr", "show", DEVICE, netns=h1.netns)
        assert f"inet6 {h1.flannel_ipv6_address()}/128" in link and "inet " not in link, link
        table6 = sh("nft", "list", "table", "ip6", "overlayd", netns=h1.netns)
        assert f"udp dport {PORT} ip6 saddr != @wireguard_peers" in table6 and h2.ipv6 in table6, table6
        value = next(v for v in map(json.loads, raw_leases(lab).values()) if v["PublicIPv6"] == h2.ipv6)
        assert value["BackendV6Data"] == {"PublicKey": public_key(h2, DEVICE)} and "BackendData" not in value


def test_lab_up_refuses_mode_ipv4_in_an_ipv6_only_network_at_once(tmp_path: Path) -> None:
    config = json.loads(lab_network_config("wireguard", ipv4=False))
    config["Backend"]["Mode"] = "ipv4"
    name = random_lab_name()
    argv = [sys.executable, "-m", "overlayd", "lab", "up", "--name", name, "--root", str(tmp_path),
            "--ipv6-only", "--network-config", json.dumps(config), "--hosts", "2",
            "--containers", "0"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done
    assert "Backend.Mode ipv4 reaches peers at their PublicIP, which an IPv6-only network" in done.stderr
    assert "use Mode separate (flannel-wg-v6), ipv6 or auto (flannel-wg)" in done.stderr
    assert not lab_namespaces(name), "nothing was started"
