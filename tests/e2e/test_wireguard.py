"""The wireguard backend in the lab: real agents, wireguard-go (this kernel has no WireGuard), `wg`,
containers attached by the CNI plugin, and captures on the underlay bridge.

One lab of three hosts with one container each serves the module; the tests run in file order and
each leaves the lab converged for the next.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from labtools import log_mark, log_since, needs_lab, running_lab, underlay_capture, wait_for

from overlayd.lab.hosts import lab_network_config
from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh
from overlayd.lab.shell import kill_namespace_processes

pytestmark = [needs_lab, pytest.mark.root]

PORT = 51820
DEVICE = "flannel-wg"
STRANGER_IP = "192.0.2.250"  # on the underlay, outside the hosts' range


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=3, network_config=lab_network_config("wireguard")) as lab:
        lab.add_containers(1)
        yield lab


def wg(host: LabHost, *args: str, check: bool = True) -> str:
    """``wg`` in the host, which sees the host's own wireguard-go socket."""
    return subprocess.run(host.command(["wg", *args]), capture_output=True, text=True, check=check).stdout


def peers(host: LabHost) -> dict[str, tuple[str, str]]:
    """The device's peers: public key -> (endpoint, allowed IPs); none while there is no device."""
    lines = wg(host, "show", DEVICE, "dump", check=False).splitlines()[1:]
    return {f[0]: (f[2], f[3]) for f in (line.split("\t") for line in lines)}


def public_key(host: LabHost) -> str:
    return wg(host, "show", DEVICE, "public-key", check=False).strip()


def lease_value(lab: Lab, host: LabHost) -> dict:
    subnet = host.subnet_env()["FLANNEL_SUBNET"]
    key = f"{host.flannel_address()}-{subnet.split('/')[1]}"
    return json.loads(lab.etcd().etcdctl("get", "--print-value-only", f"{ETCD_PREFIX}/subnets/{key}"))


def container(host: LabHost) -> tuple[str, str]:
    """(name, address) of the host's container."""
    return next(iter(host.containers.items()))


def all_peers_know(lab: Lab) -> bool:
    """Every host has every other host as a peer, with its current key, endpoint and subnet."""
    for host in lab.hosts:
        want = {public_key(other): (f"{other.ip}:{PORT}", f"{other.flannel_address()}/24")
                for other in lab.hosts if other is not host}  # fmt: skip
        if peers(host) != want:
            return False
    return True


def test_containers_reach_each_other_through_wireguard_go(lab: Lab) -> None:
    table, ok = lab.container_ping_table()
    assert ok, table
    wait_for(lambda: all_peers_know(lab), 10, "every host's peers")
    h1 = lab.hosts[0]
    log = h1.log_file.read_text()
    assert "userspace implementation wireguard-go" in log
    assert h1.subnet_env()["FLANNEL_MTU"] == "1420"  # 1500 - 80, as flanneld
    # The lease carries exactly flanneld's BackendData.
    value = lease_value(lab, h1)
    assert value["BackendType"] == "wireguard" and value["BackendData"] == {"PublicKey": public_key(h1)}
    # The private key is kept 0600 in the state directory and shown nowhere.
    key_file = Path(h1.dir) / "state" / "wireguard-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    private = key_file.read_text().strip()
    assert private not in log and private not in Lab.http_get(h1, "/metrics")[1]
    status = subprocess.run(h1.command([sys.executable, "-m", "overlayd", "status",
                                        f"--etcd-endpoints={lab.etcd_endpoint}",
                                        f"--subnet-file={h1.subnet_file}"]),
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "device      flannel-wg mtu 1420" in status and "2 tunnel peers" in status, status
    assert private not in status
    # A packet for a subnet nobody holds goes to the device (which drops it), not to the underlay.
    assert "dev flannel-wg" in sh("ip", "route", "get", "198.18.250.9", netns=h1.netns)


def test_the_underlay_carries_only_wireguard_udp_between_hosts(lab: Lab) -> None:
    """A capture on the underlay bridge while containers ping each other: only UDP between host
    addresses on the WireGuard port, and no container address anywhere in it."""
    # etcd's TCP is the lab's control plane, not overlay traffic; ARP is link-local chatter.
    with underlay_capture(lab, "underlay", "ip and not host 192.0.2.2") as lines:
        for source in lab.hosts:
            for target in lab.hosts:
                if source is not target:
                    name, _ = container(source)
                    address = container(target)[1]
                    sh("ping", "-c", "3", "-i", "0.2", "-W", "1", address, netns=lab.container_ns(name))
    text = "\n".join(lines)
    hosts = "|".join(re.escape(host.ip) for host in lab.hosts)
    wireguard = re.compile(rf"IP ({hosts})\.{PORT} > ({hosts})\.{PORT}: UDP, length \d+$")
    assert len(lines) >= 18, text  # 6 pairs x 3 pings, each way
    strays = [line for line in lines if not wireguard.search(line)]
    assert not strays, "\n".join(strays[:10])
    assert "198.18." not in text


def test_a_stranger_on_the_underlay_reaches_no_container(lab: Lab) -> None:
    """A namespace on the underlay that routes the Network through h1 in clear, from its own
    address and from a peer's subnet, then with its own WireGuard key aimed at h1 as a peer's:
    h1 forwards none of it to a container, and does not know the key."""
    h1 = lab.hosts[0]
    stranger = f"{lab.name}-stranger"
    lab._make_node(stranger, "stranger", IPv4Address(STRANGER_IP))
    stranger_host = LabHost("stranger", stranger, STRANGER_IP, str(Path(lab.dir) / "stranger"))
    key_file = Path(lab.dir) / "stranger.key"
    key_file.write_text(subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout)
    target = container(h1)[1]
    try:
        sh("ip", "route", "add", "198.18.0.0/16", "via", h1.ip, netns=stranger)
        spoofed = f"{lab.hosts[1].flannel_address()}"  # h2's subnet, as if from h2's tunnel
        sh("ip", "addr", "add", f"{spoofed}/32", "dev", "lo", netns=stranger)
        for source in (STRANGER_IP, spoofed):
            out = sh("ping", "-c", "2", "-i", "0.3", "-W", "1", "-I", source, target, netns=stranger,
                     check=False)  # fmt: skip
            assert " 0 received" in out, out
        forward = sh("nft", "list", "chain", "ip", "overlayd", "forward", netns=h1.netns)
        assert re.search(r'iifname "eth0" .* counter packets [1-9]\d* bytes \d+ drop', forward), forward
        sh("ip", "route", "del", "198.18.0.0/16", netns=stranger)
        assert published_port_answers(lab, h1, stranger), "a DNAT'd port (hostPort, NodePort) must still work"
        subprocess.run(stranger_host.command(["wireguard-go", "wg0"]), check=True, capture_output=True)
        wg(stranger_host, "set", "wg0", "private-key", str(key_file), "listen-port", str(PORT),
           "peer", public_key(h1), "endpoint", f"{h1.ip}:{PORT}", "allowed-ips", "198.18.0.0/16")  # fmt: skip
        sh("ip", "addr", "add", "198.19.250.1/32", "dev", "wg0", netns=stranger)
        sh("ip", "link", "set", "wg0", "up", netns=stranger)
        sh("ip", "route", "add", "198.18.0.0/16", "dev", "wg0", netns=stranger)
        out = sh("ping", "-c", "3", "-i", "0.3", "-W", "1", target, netns=stranger, check=False)
        assert " 0 received" in out, out
        assert "latest handshake" not in wg(stranger_host, "show", "wg0")
        dropped = sh("nft", "list", "chain", "ip", "overlayd", "input", netns=h1.netns)
        assert re.search(r"counter packets [1-9]", dropped), dropped
    finally:
        kill_namespace_processes(stranger)
        sh("ip", "netns", "del", stranger, check=False)


def published_port_answers(lab: Lab, host: LabHost, client_ns: str) -> bool:
    """A container's port published on the host's address by DNAT, as hostPort and NodePort do,
    answers ``client_ns`` on the underlay."""
    name, address = container(host)
    www = Path(lab.dir) / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("published\n")
    server = subprocess.Popen(["ip", "netns", "exec", lab.container_ns(name), "busybox", "httpd", "-f",
                               "-p", "8080", "-h", str(www)])  # fmt: skip
    nat = ("table ip publish {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat;\n"
           f"\t\tip daddr {host.ip} tcp dport 8080 dnat to {address}:8080\n\t}}\n}}\n")
    rules = Path(lab.dir) / "publish.nft"
    rules.write_text(nat)
    try:
        sh("nft", "-f", str(rules), netns=host.netns)
        out = sh("curl", "-s", "-m", "3", "--retry", "3", "--retry-connrefused", f"http://{host.ip}:8080/",
                 netns=client_ns, check=False)  # fmt: skip
        return out.strip() == "published"
    finally:
        sh("nft", "delete", "table", "ip", "publish", netns=host.netns, check=False)
        server.terminate()
        server.wait(timeout=10)


def test_a_peer_removed_by_hand_is_back_within_a_second_or_so(lab: Lab) -> None:
    h1, h2 = lab.hosts[0], lab.hosts[1]
    wait_for(lambda: all_peers_know(lab), 10, "every host's peers")
    mark = log_mark(h1)
    started = time.monotonic()
    wg(h1, "set", DEVICE, "peer", public_key(h2), "remove")
    wait_for(lambda: public_key(h2) in peers(h1), 5, "h2's peer back on h1")
    print(f"peer repaired after {time.monotonic() - started:.2f} s")
    assert "add 1 wireguard_peer entries" in log_since(h1, mark)
    assert lab.ping(h1, str(h2.flannel_address()), count=2)


def test_the_device_s_drift_is_repaired(lab: Lab) -> None:
    """MTU, address, the Network's route and a peer's route changed by hand come back."""
    h1, h2 = lab.hosts[0], lab.hosts[1]
    peer_subnet = f"{h2.flannel_address()}/24"
    sh("ip", "link", "set", DEVICE, "mtu", "1300", netns=h1.netns)
    sh("ip", "route", "del", peer_subnet, netns=h1.netns)
    sh("ip", "route", "del", "198.18.0.0/16", "dev", DEVICE, netns=h1.netns)
    sh("ip", "addr", "flush", "dev", DEVICE, netns=h1.netns)

    def repaired() -> bool:
        link = sh("ip", "addr", "show", DEVICE, netns=h1.netns)
        routes = sh("ip", "route", "show", "dev", DEVICE, netns=h1.netns)
        return ("mtu 1420" in link and f"inet {h1.flannel_address()}/32" in link
                and "198.18.0.0/16 scope link" in routes and f"{peer_subnet} via" in routes)  # fmt: skip

    wait_for(repaired, 5, "h1's flannel-wg as it was")
    assert lab.ping(h1, str(h2.flannel_address()), count=2)


def test_sigkill_and_restart_of_an_agent_loses_no_ping_and_keeps_the_key(lab: Lab) -> None:
    h1, h2 = lab.hosts[0], lab.hosts[1]
    key = public_key(h1)
    source, target = container(h2)[0], container(h1)[1]
    ping = subprocess.Popen(
        ["ip", "netns", "exec", lab.container_ns(source), "ping", "-i", "0.05", "-c", "160", "-W", "1",
         target],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(1.5)
    lab.stop_agent(h1, signal.SIGKILL)
    time.sleep(1.0)
    lab.start_agent(h1)
    out, _ = ping.communicate(timeout=60)
    assert "160 packets transmitted, 160 received" in out, out[-400:]
    lab.wait_converged(timeout=30)
    assert public_key(h1) == key
    assert lease_value(lab, h1)["BackendData"] == {"PublicKey": key}
    log = h1.log_file.read_text()
    assert log.count("by starting wireguard-go") == 1, "the restarted agent must adopt the running device"


def test_a_restarted_wireguard_go_is_replaced_with_its_peers(lab: Lab) -> None:
    h1 = lab.hosts[0]
    key = public_key(h1)
    pids = [pid for pid in sh("ip", "netns", "pids", h1.netns).split()
            if Path(f"/proc/{pid}/comm").read_text().strip() == "wireguard-go"]  # fmt: skip
    assert len(pids) == 1, pids
    started = time.monotonic()
    subprocess.run(["kill", "-KILL", pids[0]], check=True)
    wait_for(lambda: all_peers_know(lab), 10, "h1's device and peers back")
    print(f"device and peers back after {time.monotonic() - started:.2f} s")
    assert public_key(h1) == key
    table, ok = lab.container_ping_table()
    assert ok, table


def test_a_lease_with_a_bad_key_is_skipped_named_and_never_reached_in_clear(lab: Lab) -> None:
    h1 = lab.hosts[0]
    mark = log_mark(h1)
    key = "198.18.251.0-24"
    value = {"PublicIP": STRANGER_IP, "PublicIPv6": None, "BackendType": "wireguard",
             "BackendData": {"PublicKey": "not-a-key"}}  # fmt: skip
    lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/subnets/{key}", json.dumps(value))
    try:
        wait_for(lambda: f"skipping peer lease {key} " in log_since(h1, mark), 10, "the bad lease named")
        lines = log_since(h1, mark).splitlines()
        line = next(line for line in lines if f"skipping peer lease {key} " in line)
        assert "PublicKey" in line and "not-a-key" in line, line
        assert all(endpoint != f"{STRANGER_IP}:{PORT}" for endpoint, _ in peers(h1).values())
        assert "dev flannel-wg" in sh("ip", "route", "get", "198.18.251.7", netns=h1.netns)
        # Retried: once a pair missed its three probes here, on a loaded machine, and met at the next.
        wait_for(lambda: lab.container_ping_table()[1], 15, "the other containers still reaching each other")
    finally:
        lab.etcd().etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")


def test_a_psk_keepalive_and_port_put_in_the_config_reach_every_peer_in_place(lab: Lab) -> None:
    """And taken back: the PSK cleared, the port as before."""
    psk = subprocess.run(["wg", "genpsk"], capture_output=True, text=True, check=True).stdout.strip()
    config = {"Network": "198.18.0.0/16", "Backend": {
        "Type": "wireguard", "PSK": psk, "PersistentKeepaliveInterval": 25, "ListenPort": 51900}}  # fmt: skip
    pids = [host.pid for host in lab.hosts]
    lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", json.dumps(config))

    def every_peer_has_them() -> bool:
        for host in lab.hosts:
            lines = wg(host, "show", DEVICE, "dump", check=False).splitlines()[1:]
            fields = [line.split("\t") for line in lines]
            if len(fields) != 2 or any(f[1] != psk or f[7] != "25" or not f[2].endswith(":51900")
                                       for f in fields):  # fmt: skip
                return False
        return True

    wait_for(every_peer_has_them, 20, "the PSK and keepalive on every peer")
    assert [host.pid for host in lab.hosts] == pids  # applied in place, no restart
    wait_for(lambda: lab.container_ping_table()[1], 15, "containers to reach each other with the PSK")
    assert not any(psk in host.log_file.read_text() for host in lab.hosts), "the PSK was logged"
    lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", lab_network_config("wireguard"))
    wait_for(lambda: all_peers_know(lab) and "(none)" in wg(lab.hosts[0], "show", DEVICE, "dump"), 20,
             "the PSK cleared and the port back on every peer")  # fmt: skip
    wait_for(lambda: lab.container_ping_table()[1], 15, "containers to reach each other again")


def test_a_rotated_key_is_picked_up_by_every_peer(lab: Lab) -> None:
    """The documented procedure: write a new private key into the key file, restart the agent."""
    h3 = lab.hosts[2]
    old = public_key(h3)
    key_file = Path(h3.dir) / "state" / "wireguard-key"
    new_private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
    lab.stop_agent(h3, signal.SIGTERM)
    key_file.write_text(new_private)
    lab.start_agent(h3)
    wait_for(lambda: public_key(h3) != old, 15, "h3's device to take the new key")
    wait_for(lambda: all_peers_know(lab), 15, "every peer to know h3's new key")
    assert lease_value(lab, h3)["BackendData"] == {"PublicKey": public_key(h3)}
    assert key_file.stat().st_mode & 0o777 == 0o600
    wait_for(lambda: lab.container_ping_table()[1], 15, "containers to reach each other again")


def test_a_host_joining_with_a_foreign_tun_device_of_that_name_replaces_it(lab: Lab) -> None:
    """A TUN device called flannel-wg that no wireguard-go serves (left by someone else) is
    deleted and made again, and the new host becomes every other host's peer."""
    h4 = lab.add_host(start_agent=False)
    sh("ip", "tuntap", "add", DEVICE, "mode", "tun", netns=h4.netns)
    lab.start_agent(h4)
    wait_for(lambda: h4.subnet_env(), 30, "h4's subnet.env")
    wait_for(lambda: all_peers_know(lab), 20, "every host's peers, h4 among them")
    assert "which no wireguard-go serves" in h4.log_file.read_text()
    assert lab.ping(h4, str(lab.hosts[0].flannel_address()), count=2)


def test_a_key_file_holding_no_key_holds_the_agent_back_naming_it_until_fixed(lab: Lab) -> None:
    host = lab.add_host(start_agent=False)
    key_file = Path(host.dir) / "state" / "wireguard-key"
    key_file.parent.mkdir(mode=0o700, parents=True)
    key_file.write_text("not a key\n")
    lab.start_agent(host)
    named = f"WireGuard private key file {key_file} holds no key"
    wait_for(lambda: named in host.log_file.read_text(), 20, "the key file named in the log")
    log = host.log_file.read_text()
    assert "wg genkey" in log and "not a key" not in log and "Traceback" not in log, log[-800:]
    status, body = Lab.http_get(host, "/readyz")
    assert status == 503 and named in body
    assert key_file.read_text() == "not a key\n"  # nothing replaced behind the operator's back
    key_file.unlink()  # the documented fix: a new key is generated at the next attempt
    wait_for(lambda: host.subnet_env(), 60, "the host to go on once the file is gone")
    assert log.count(named) == 1


def exited(pid: int) -> bool:
    """Whether the agent ``pid`` (a child of this process, or reaped already by subprocess) ended."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return not Path(f"/proc/{pid}").exists()


def test_switching_the_network_to_vxlan_removes_flannel_wg_and_wireguard_go(lab: Lab) -> None:
    """Last: the lab leaves wireguard. An agent restarts for a new backend (or switches in
    place); either way flannel-wg and its wireguard-go go, and the containers meet over VXLAN."""
    running = [host for host in lab.hosts if host.pid]
    lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", lab_network_config("vxlan"))

    def switched(host: LabHost) -> bool:
        if exited(host.pid):  # to be restarted, as systemd would
            lab.start_agent(host)
        return "flannel.1" in sh("ip", "-o", "link", "show", netns=host.netns)

    wait_for(lambda: all(switched(host) for host in running), 60, "every host on vxlan")
    lab.wait_converged(timeout=60)
    for host in running:
        assert DEVICE not in sh("ip", "-o", "link", "show", netns=host.netns)
        names = [Path(f"/proc/{pid}/comm").read_text().strip()
                 for pid in sh("ip", "netns", "pids", host.netns).split()]  # fmt: skip
        assert "wireguard-go" not in names
    wait_for(lambda: lab.container_ping_table()[1], 20, "containers to reach each other over VXLAN")
