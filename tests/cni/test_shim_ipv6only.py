"""The CNI shim with an IPv6-only network's subnet.env (no FLANNEL_NETWORK nor FLANNEL_SUBNET):
the delegate gets an IPv6 range and route alone, as flannel's plugin gives it, and the real
bridge/host-local plugins attach, check and release a container with an IPv6 address alone."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from cni_shim.netconf import build_delegate, parse_conf
from cni_shim.subnetenv import SubnetEnvError, parse_subnet_env

from .conftest import Node, run_netns

V6_ONLY = {
    "FLANNEL_IPV6_NETWORK": "2001:db8::/48",
    "FLANNEL_IPV6_SUBNET": "2001:db8:0:5::1/64",
    "FLANNEL_MTU": "1430",
    "FLANNEL_IPMASQ": "true",
}
TEXT = "".join(f"{key}={value}\n" for key, value in V6_ONLY.items())
GATEWAY6 = "2001:db8:0:5::1"


def test_the_delegate_has_the_ipv6_range_and_route_alone() -> None:
    ipam = {"routes": [{"dst": "2001:db8:9::/48"}]}
    conf = parse_conf({"name": "ovctest", "type": "flannel", "ipam": ipam}, "1.0.0")
    delegate = build_delegate(conf, parse_subnet_env(TEXT))
    assert (delegate["type"], delegate["bridge"], delegate["isGateway"]) == ("bridge", "cni0", True)
    assert (delegate["mtu"], delegate["ipMasq"]) == (1430, False)
    # flannel's plugin: ranges [[{subnet: FLANNEL_IPV6_SUBNET's network}]], routes the user's
    # then FLANNEL_IPV6_NETWORK; ours names the gateways too (bridge's CHECK needs them).
    assert delegate["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "2001:db8:0:5::/64", "gateway": GATEWAY6}]],
        "routes": [{"dst": "2001:db8:9::/48"}, {"dst": "2001:db8::/48", "gw": GATEWAY6}],
    }


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (TEXT.replace("FLANNEL_IPV6_NETWORK=2001:db8::/48\n", ""),
         "FLANNEL_IPV6_NETWORK missing while FLANNEL_IPV6_SUBNET is set"),
        (TEXT.replace("2001:db8:0:5::1/64", "2001:db9:0:5::1/64"),
         "FLANNEL_IPV6_SUBNET 2001:db9:0:5::1/64 is not inside FLANNEL_IPV6_NETWORK 2001:db8::/48"),
        (TEXT.replace("2001:db8:0:5::1/64", "198.18.5.1/24"),
         "FLANNEL_IPV6_NETWORK/FLANNEL_IPV6_SUBNET must be IPv6"),
        (TEXT.replace("2001:db8::/48", "nonsense"), "FLANNEL_IPV6_NETWORK 'nonsense' is not a network"),
        (TEXT.replace("FLANNEL_MTU=1430\n", ""), "FLANNEL_MTU missing"),
    ],
)  # fmt: skip
def test_a_broken_ipv6_only_file_names_the_key(text: str, named: str) -> None:
    with pytest.raises(SubnetEnvError, match=r"/run/flannel/subnet\.env: ") as raised:
        parse_subnet_env(text, "/run/flannel/subnet.env")
    assert named in str(raised.value)


def _settled(host: Node, deadline: float = 10.0) -> str:
    """The bridge's addresses once duplicate address detection is over: the gateway's IPv6
    address is "tentative" for about a second after ADD (the bridge plugin does not wait for
    it, in flannel's set-up too), and a tentative address answers nothing."""
    give_up = time.monotonic() + deadline
    while True:
        listing = run_netns(["ip", "-n", str(host.host_ns), "-o", "addr", "show", "dev", host.bridge]).stdout
        if "tentative" not in listing or time.monotonic() > give_up:
            return listing
        time.sleep(0.1)


def _released(host: Node, netns: str) -> None:
    assert host.state_files() == [] and host.allocations() == {}
    assert host.links(netns) == ["lo"]


@pytest.mark.root
@pytest.mark.parametrize("version", ["0.2.0", "0.4.0", "1.0.0"])
def test_a_container_gets_an_ipv6_address_alone_and_reaches_its_gateway(host: Node, version: str) -> None:
    host.write_subnet_env(V6_ONLY)
    netns = host.netns()
    added = host.call("ADD", host.conf(version), netns)
    assert added.returncode == 0, added.stdout + added.stderr
    result = added.json
    if version == "0.2.0":  # the old format: its ip6 half, no ip4 (converting down keeps it)
        assert "ip4" not in result
        assert result["ip6"] == {"ip": "2001:db8:0:5::2/64", "gateway": GATEWAY6,
                                 "routes": [{"dst": "2001:db8::/48", "gw": GATEWAY6}]}  # fmt: skip
    else:
        assert [ip["address"] for ip in result["ips"]] == ["2001:db8:0:5::2/64"]
        assert result["routes"] == [{"dst": "2001:db8::/48", "gw": GATEWAY6}]
    saved = json.loads((host.data_dir / "ovctest+ctr1+eth0").read_text())
    assert saved["ipam"]["ranges"] == [[{"subnet": "2001:db8:0:5::/64", "gateway": GATEWAY6}]]
    assert host.allocations() == {"2001:db8:0:5::2": "ctr1"}
    addresses = run_netns(["ip", "-n", netns, "-o", "addr", "show", "dev", "eth0"]).stdout
    assert "inet " not in addresses and "inet6 2001:db8:0:5::2/64" in addresses
    routes = run_netns(["ip", "-n", netns, "-6", "route", "show", "2001:db8::/48"]).stdout
    assert f"via {GATEWAY6} dev eth0" in routes
    bridge = _settled(host)
    assert f"inet6 {GATEWAY6}/64 scope global \\" in bridge and "inet " not in bridge
    assert host.ping(netns, GATEWAY6)
    if version != "0.2.0":  # CHECK needs 0.4.0 or later
        checked = host.call("CHECK", host.conf(version, prevResult=result), netns)
        assert checked.returncode == 0, checked.stdout
    assert host.call("DEL", host.conf(version), netns).returncode == 0
    _released(host, netns)


@pytest.mark.root
def test_del_without_saved_state_rebuilds_the_ipv6_only_config_and_releases(host: Node) -> None:
    host.write_subnet_env(V6_ONLY)
    netns = host.netns()
    assert host.call("ADD", host.conf(), netns).returncode == 0
    shutil.rmtree(host.data_dir)  # the state wiped (a reboot with dataDir on tmpfs)
    assert host.call("DEL", host.conf(), netns).returncode == 0
    _released(host, netns)


@pytest.mark.root
def test_status_is_ready_with_an_ipv6_only_file(host: Node) -> None:
    host.write_subnet_env(V6_ONLY)
    ready = host.call("STATUS", host.conf("1.1.0"), None, container_id="", ifname="")
    assert (ready.returncode, ready.stdout) == (0, ""), ready.stdout
    host.write_subnet_env({key: value for key, value in V6_ONLY.items() if key != "FLANNEL_IPV6_NETWORK"})
    broken = host.call("STATUS", host.conf("1.1.0"), None, container_id="", ifname="")
    assert "FLANNEL_IPV6_NETWORK missing" in broken.error(50)["msg"]
