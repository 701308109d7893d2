"""The wireguard backend in a dual-stack network (Mode separate, flanneld's default): real agents,
wireguard-go for ``flannel-wg`` and ``flannel-wg-v6``, containers with both addresses, and a
capture on the underlay bridge.

One lab of three hosts with one container each serves the module; the tests run in file order and
each leaves the lab converged for the next (the last switches it to vxlan).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import lease_values, needs_lab, running_lab, status_json, underlay_capture, wait_for
from wgtools import (
    DEVICE,
    DEVICE6,
    PORT,
    PORT6,
    all_v6_peers_know,
    peers,
    public_key,
    remove_peer_by_hand_and_see_it_back,
    subnet6,
    wg,
    wireguard_lab,
)

from overlayd.lab.hosts import lab_network_config
from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh

pytestmark = [needs_lab, pytest.mark.root]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with wireguard_lab(tmp_path_factory, ipv6=True) as lab:
        yield lab


def test_every_pair_of_containers_meets_over_ipv4_and_ipv6(lab: Lab) -> None:
    wait_for(lambda: lab.container_ping_table()[1], 15, "every pair of containers to ping, both families")
    table, ok = lab.container_ping_table()
    assert ok and "IPv6" in table, table
    wait_for(lambda: all_v6_peers_know(lab), 10, "every host's IPv6 peers")
    h1 = lab.hosts[0]
    # One key on both devices; each listens on its own port; both 80 below the underlay's MTU.
    assert public_key(h1, DEVICE6) == public_key(h1) != ""
    assert wg(h1, "show", DEVICE6, "listen-port").strip() == str(PORT6)
    link6 = sh("ip", "addr", "show", DEVICE6, netns=h1.netns)
    assert "mtu 1420" in link6 and f"inet6 {h1.flannel_ipv6_address()}/128" in link6, link6
    assert "2001:db8:1000::/48 dev flannel-wg-v6" in sh("ip", "-6", "route", netns=h1.netns)
    assert h1.subnet_env()["FLANNEL_MTU"] == "1420"
    # The lease is flanneld's: PublicIPv6, and the key again as BackendV6Data.
    for host in lab.hosts:
        value = next(v for v in lease_values(lab).values() if v["PublicIP"] == host.ip)
        assert list(value) == ["PublicIP", "PublicIPv6", "BackendType", "BackendData", "BackendV6Data"]
        assert value["PublicIPv6"] == host.ipv6
        assert value["BackendData"] == value["BackendV6Data"] == {"PublicKey": public_key(host)}
    device = status_json(lab, h1)["device"]
    assert (device["name"], device["ipv6_name"], len(device["routes"])) == (DEVICE, DEVICE6, 4), device
    # The ip6 table's allowlist lets in the peers' PublicIPv6s, on ListenPortV6.
    table6 = sh("nft", "list", "table", "ip6", "overlayd", netns=h1.netns)
    assert f"udp dport {PORT6} ip6 saddr != @wireguard_peers" in table6, table6
    assert all(other.ipv6 in table6 for other in lab.hosts[1:]), table6


def test_the_underlay_carries_only_wireguard_udp_for_both_families(lab: Lab) -> None:
    """A capture on the underlay bridge while containers ping each other over both families:
    only UDP between host addresses on the listen ports (IPv6's on ListenPortV6), besides the
    underlay's own neighbour discovery, and no container address anywhere in it."""
    with underlay_capture(lab, "underlay6", "(ip and not host 192.0.2.2) or ip6") as lines:
        for source in lab.hosts:
            name = next(iter(source.containers))
            for target in lab.hosts:
                if source is not target:
                    for address in (*target.containers.values(), *target.containers6.values()):
                        sh("ping", "-c", "2", "-i", "0.2", "-W", "1", address, netns=lab.container_ns(name))
    hosts4 = "|".join(re.escape(host.ip) for host in lab.hosts)
    hosts6 = "|".join(re.escape(host.ipv6) for host in lab.hosts)
    wireguard4 = re.compile(rf"IP ({hosts4})\.{PORT} > ({hosts4})\.{PORT}: UDP, length \d+$")
    wireguard6 = re.compile(rf"IP6 ({hosts6})\.{PORT6} > ({hosts6})\.{PORT6}: UDP, length \d+$")
    discovery = re.compile(r"ICMP6, (neighbor (solicitation|advertisement)|router solicitation|multicast "
                           "listener)")
    carried6 = [line for line in lines if wireguard6.search(line)]
    assert len(carried6) >= 12, "\n".join(lines[:20])  # 6 pairs x 2 pings, each way
    strays = [line for line in lines
              if not wireguard4.search(line) and not wireguard6.search(line) and not discovery.search(line)]
    assert not strays, "\n".join(strays[:10])
    text = "\n".join(lines)
    assert "198.18." not in text and "2001:db8:1000:" not in text


def test_a_peer_removed_by_hand_from_the_ipv6_device_is_repaired(lab: Lab) -> None:
    v4_before = peers(lab.hosts[0], DEVICE)
    remove_peer_by_hand_and_see_it_back(lab, DEVICE6)
    assert peers(lab.hosts[0], DEVICE) == v4_before  # the IPv4 device untouched


def test_the_ipv6_device_s_drift_is_repaired(lab: Lab) -> None:
    """MTU, address, the IPv6Network's route and a peer's IPv6 route changed by hand come back."""
    h1, h2 = lab.hosts[0], lab.hosts[1]
    sh("ip", "link", "set", DEVICE6, "mtu", "1300", netns=h1.netns)
    sh("ip", "-6", "route", "del", subnet6(h2), "dev", DEVICE6, netns=h1.netns)
    sh("ip", "-6", "route", "del", "2001:db8:1000::/48", "dev", DEVICE6, netns=h1.netns)
    sh("ip", "-6", "addr", "del", f"{h1.flannel_ipv6_address()}/128", "dev", DEVICE6, netns=h1.netns)

    def repaired() -> bool:
        link = sh("ip", "addr", "show", DEVICE6, netns=h1.netns)
        routes = sh("ip", "-6", "route", "show", "dev", DEVICE6, netns=h1.netns)
        return ("mtu 1420" in link and f"inet6 {h1.flannel_ipv6_address()}/128" in link
                and "2001:db8:1000::/48" in routes and f"{subnet6(h2)} via" in routes)  # fmt: skip

    wait_for(repaired, 10, "h1's flannel-wg-v6 as it was")
    wait_for(lambda: lab.ping(h1, h2.flannel_ipv6_address() or "", count=1), 10, "h2 over IPv6 again")


def serves(pid: str, device: str) -> bool:
    """Whether process ``pid`` is the wireguard-go of ``device``."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return Path(argv[0].decode()).name == "wireguard-go" and device.encode() in argv[1:]


def test_a_killed_wireguard_go_of_the_ipv6_device_is_replaced_with_its_peers(lab: Lab) -> None:
    h1 = lab.hosts[0]
    served = [pid for pid in sh("ip", "netns", "pids", h1.netns).split() if serves(pid, DEVICE6)]
    assert len(served) == 1, served
    subprocess.run(["kill", "-KILL", served[0]], check=True)
    wait_for(lambda: all_v6_peers_know(lab), 15, "h1's flannel-wg-v6 and its peers back")
    wait_for(lambda: lab.ping(h1, lab.hosts[2].flannel_ipv6_address() or "", count=1), 10, "h3 over IPv6")


def test_switching_to_vxlan_removes_both_wireguard_devices(lab: Lab) -> None:
    """Last: the lab leaves wireguard for vxlan, dual-stack; neither device is left."""
    lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", lab_network_config("vxlan", ipv6=True))

    def switched(host: LabHost) -> bool:
        links = sh("ip", "-o", "link", "show", netns=host.netns)
        return "flannel-v6.1" in links and DEVICE not in links

    wait_for(lambda: all(switched(host) for host in lab.hosts), 40, "every host on vxlan, no flannel-wg*")
    wait_for(lambda: lab.container_ping_table()[1], 20, "containers to reach each other over VXLAN")


def test_mode_ipv6_carries_both_families_in_one_device_over_ipv6(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Mode ipv6, as flanneld: no flannel-wg-v6; flannel-wg holds both addresses and Networks, and
    reaches each peer at its PublicIPv6 on ListenPort, allowed both its subnets."""
    config = json.loads(lab_network_config("wireguard", ipv6=True))
    config["Backend"]["Mode"] = "ipv6"
    with running_lab(tmp_path_factory, hosts=2, ipv6=True, network_config=json.dumps(config)) as lab:
        h1, h2 = lab.hosts
        lab.add_containers(1)
        wait_for(lambda: lab.container_ping_table()[1], 15, "every pair of containers to ping, both families")
        both = f"{h2.flannel_address()}/24,{subnet6(h2)}"
        assert peers(h1, DEVICE) == {public_key(h2): (f"[{h2.ipv6}]:{PORT}", both)}
        links = sh("ip", "-o", "addr", "show", DEVICE, netns=h1.netns)
        assert f"inet {h1.flannel_address()}/32" in links
        assert f"inet6 {h1.flannel_ipv6_address()}/128" in links
        assert DEVICE6 not in sh("ip", "-o", "link", "show", netns=h1.netns)
        # Every peer is reached over IPv6: the ip table admits no source, the ip6 one h2 on ListenPort.
        table6 = sh("nft", "list", "table", "ip6", "overlayd", netns=h1.netns)
        assert f"udp dport {PORT} ip6 saddr != @wireguard_peers" in table6 and h2.ipv6 in table6, table6
        assert h2.ip not in sh("nft", "list", "set", "ip", "overlayd", "wireguard_peers", netns=h1.netns)


def test_ipv6_turned_on_and_off_live_adds_and_removes_flannel_wg_v6(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The network config gains EnableIPv6 while the agents run: each takes a dual-stack lease,
    makes flannel-wg-v6, and new containers meet over both families; without it again the
    device goes. No agent restarts."""
    config = lab_network_config("wireguard")
    with running_lab(tmp_path_factory, hosts=2, ipv6=True, network_config=config) as lab:
        pids = [host.pid for host in lab.hosts]
        lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", lab_network_config("wireguard", ipv6=True))
        wait_for(lambda: all("FLANNEL_IPV6_SUBNET" in host.subnet_env() for host in lab.hosts), 30,
                 "every host to take a dual-stack lease")  # fmt: skip
        lab.wait_converged(timeout=30)
        lab.add_containers(1)
        wait_for(lambda: lab.container_ping_table()[1], 15, "every pair of containers to ping, both families")
        assert all(DEVICE6 in sh("ip", "-o", "link", "show", netns=host.netns) for host in lab.hosts)
        lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", config)
        links = lambda: "".join(sh("ip", "-o", "link", "show", netns=host.netns) for host in lab.hosts)  # noqa: E731
        wait_for(lambda: DEVICE6 not in links(), 30, "flannel-wg-v6 gone from every host")
        assert [host.pid for host in lab.hosts] == pids
