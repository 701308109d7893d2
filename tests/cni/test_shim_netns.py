"""Black-box tests with the real bridge/host-local plugins, in network namespaces."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest

from .conftest import DUAL_STACK, REFERENCE_PLUGINS, SUBNET_ENV, Node, run_netns

pytestmark = pytest.mark.root

GATEWAY = "198.18.5.1"


def _assert_released(host: Node, netns: str | None = None) -> None:
    """Nothing left of an attachment: no state file, no address, no container interface."""
    assert host.state_files() == []
    assert host.allocations() == {}
    if netns:
        assert host.links(netns) == ["lo"]


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_prints_the_result_in_the_config_version(host: Node, version: str) -> None:
    netns = host.netns()
    reply = host.call("ADD", host.conf(version), netns)
    assert reply.returncode == 0, reply.stdout
    result = reply.json
    assert result["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert result["ip4"] == {
            "ip": "198.18.5.2/24",
            "gateway": GATEWAY,
            "routes": [{"dst": "198.18.0.0/16", "gw": GATEWAY}],
        }
        assert "interfaces" not in result
    else:
        (ip,) = result["ips"]
        assert ip["address"] == "198.18.5.2/24"
        assert ip["gateway"] == GATEWAY
        assert result["interfaces"][ip["interface"]]["sandbox"] == f"/var/run/netns/{netns}"
        assert ("version" in ip) == (version < "1.0.0")
        assert result["routes"] == [{"dst": "198.18.0.0/16", "gw": GATEWAY}]
    assert host.ping(netns, GATEWAY)

    assert host.call("DEL", host.conf(version), netns).returncode == 0
    _assert_released(host, netns)


@pytest.mark.parametrize("version", ["", None, "absent"])
def test_a_config_without_cni_version_is_0_1_0(host: Node, version: str | None) -> None:
    """A conflist without cniVersion reaches each plugin as ``"cniVersion": ""``; the reference
    library, and so flannel's plugin, read that (and null, and no key) as 0.1.0."""
    conf = host.conf()
    if version == "absent":
        del conf["cniVersion"]
    else:
        conf["cniVersion"] = version
    netns = host.netns()
    reply = host.call("ADD", conf, netns)
    assert reply.returncode == 0, reply.stdout
    assert reply.json["cniVersion"] == "0.1.0" and reply.json["ip4"]["ip"] == "198.18.5.2/24"
    assert host.call("DEL", conf, netns).returncode == 0
    _assert_released(host, netns)


def test_delegate_gets_flannel_defaults_and_user_keys(host: Node) -> None:
    netns = host.netns()
    conf = host.conf(delegate={"bridge": host.bridge, "mtu": 1400, "hairpinMode": True})
    assert host.call("ADD", conf, netns).returncode == 0
    saved = host.data_dir / "ovctest+ctr1+eth0"
    assert saved.stat().st_mode & 0o777 == 0o600
    delegate = json.loads(saved.read_text())
    assert delegate["mtu"] == 1400  # the user's key beats FLANNEL_MTU
    assert delegate["ipMasq"] is False  # FLANNEL_IPMASQ=true: the agent masquerades
    link = run_netns(["ip", "-n", netns, "-o", "link", "show", "eth0"]).stdout
    assert "mtu 1400" in link


def test_dual_stack_subnet_env_adds_an_ipv6_range(host: Node) -> None:
    host.write_subnet_env(DUAL_STACK)
    netns = host.netns()
    reply = host.call("ADD", host.conf(), netns)
    assert reply.returncode == 0, reply.stdout
    assert [ip["address"] for ip in reply.json["ips"]] == ["198.18.5.2/24", "2001:db8:0:5::2/64"]
    assert {"dst": "2001:db8::/48", "gw": "2001:db8:0:5::1"} in reply.json["routes"]
    assert host.call("DEL", host.conf(), netns).returncode == 0
    _assert_released(host, netns)


def test_ipv6_only_subnet_env_gives_an_ipv6_address_alone(host: Node) -> None:
    """The file flanneld writes with EnableIPv4 false: no FLANNEL_NETWORK nor FLANNEL_SUBNET."""
    ipv6_keys = ("FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ")
    host.write_subnet_env({key: DUAL_STACK[key] for key in ipv6_keys})
    netns = host.netns()
    reply = host.call("ADD", host.conf(), netns)
    assert reply.returncode == 0, reply.stdout
    assert [ip["address"] for ip in reply.json["ips"]] == ["2001:db8:0:5::2/64"]
    assert reply.json["routes"] == [{"dst": "2001:db8::/48", "gw": "2001:db8:0:5::1"}]
    assert "inet " not in run_netns(["ip", "-n", netns, "-o", "addr", "show", "eth0"]).stdout
    assert host.call("DEL", host.conf(), netns).returncode == 0
    _assert_released(host, netns)


def test_add_succeeds_when_subnet_env_appears_while_waiting(host: Node) -> None:
    host.subnet_file.unlink()
    writer = threading.Timer(0.4, host.write_subnet_env, args=(SUBNET_ENV,))
    writer.start()
    try:
        reply = host.call("ADD", host.conf(subnetFileTimeout=5), host.netns())
    finally:
        writer.join()
    assert reply.returncode == 0, reply.stdout


def test_exhausted_subnet_fails_and_leaves_nothing_behind(host: Node) -> None:
    host.write_subnet_env({**SUBNET_ENV, "FLANNEL_SUBNET": "198.18.5.1/30"})  # one free address
    first, second = host.netns(), host.netns()
    assert host.call("ADD", host.conf(), first, container_id="first").returncode == 0
    reply = host.call("ADD", host.conf(), second, container_id="second")
    assert "no IP addresses available" in reply.error(999)["msg"]
    assert host.state_files() == ["first", "ovctest+first+eth0"]
    assert host.allocations() == {"198.18.5.2": "first"}
    assert host.links(second) == ["lo"]
    assert host.ping(first, GATEWAY)


def test_second_add_fails_without_disturbing_the_first(host: Node) -> None:
    netns = host.netns()
    first = host.call("ADD", host.conf(), netns)
    assert first.returncode == 0
    second = host.call("ADD", host.conf(), netns)
    assert "already has eth0" in second.error(999)["msg"]
    assert host.state_files() == ["ctr1", "ovctest+ctr1+eth0"]
    assert host.allocations() == {"198.18.5.2": "ctr1"}
    assert host.ping(netns, GATEWAY)
    prev = {**host.conf(), "prevResult": first.json}
    assert host.call("CHECK", prev, netns).returncode == 0


def test_second_add_with_lost_state_is_refused_by_the_delegate(host: Node) -> None:
    netns = host.netns()
    assert host.call("ADD", host.conf(), netns).returncode == 0
    for saved in host.data_dir.iterdir():
        saved.unlink()
    reply = host.call("ADD", host.conf(), netns)
    assert reply.returncode != 0
    assert host.state_files() == []  # the failed ADD removed the state it wrote


def test_check_with_prev_result(host: Node) -> None:
    netns = host.netns()
    for version in ("0.4.0", "1.1.0"):
        added = host.call("ADD", host.conf(version), netns)
        assert added.returncode == 0, added.stdout
        checked = host.call("CHECK", host.conf(version, prevResult=added.json), netns)
        assert (checked.returncode, checked.stdout) == (0, "")
        # A prevResult that does not match the container fails the delegate's CHECK.
        wrong = {**added.json, "ips": [{**added.json["ips"][0], "address": "198.18.5.99/24"}]}
        assert host.call("CHECK", host.conf(version, prevResult=wrong), netns).returncode != 0
        assert host.call("DEL", host.conf(version, prevResult=added.json), netns).returncode == 0
    _assert_released(host, netns)


def test_del_is_idempotent_and_needs_no_netns(host: Node) -> None:
    netns = host.netns()
    assert host.call("ADD", host.conf(), netns).returncode == 0
    assert host.call("DEL", host.conf(), None, CNI_NETNS=None).returncode == 0
    assert host.state_files() == []
    assert host.allocations() == {}
    assert host.call("DEL", host.conf(), netns).returncode == 0
    assert host.call("DEL", host.conf(), netns, container_id="never-added").returncode == 0


def test_flannels_plugin_releases_a_container_attached_here(host: Node) -> None:
    """A node switched back to flannel's plugin: its DEL reads ``<dataDir>/<containerID>``,
    delegates DEL with that config and removes the file (done here as it does it)."""
    netns = host.netns()
    assert host.call("ADD", host.conf(), netns).returncode == 0
    flannels_file = host.data_dir / "ctr1"
    env = {
        "PATH": "/usr/sbin:/usr/bin",
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": "ctr1",
        "CNI_NETNS": f"/var/run/netns/{netns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(REFERENCE_PLUGINS),
    }
    assert host.host_ns
    bridge = ["ip", "netns", "exec", host.host_ns, str(REFERENCE_PLUGINS / "bridge")]
    deleted = subprocess.run(bridge, input=flannels_file.read_text(), env=env, capture_output=True, text=True)
    assert deleted.returncode == 0, deleted.stdout
    flannels_file.unlink()
    assert host.allocations() == {}
    assert host.links(netns) == ["lo"]


def test_del_with_a_conflist_broken_since_add_releases_what_add_made(host: Node) -> None:
    netns = host.netns()
    assert host.call("ADD", host.conf(), netns).returncode == 0
    broken = host.conf(delegate={"bridge": host.bridge, "ipam": {"type": "dhcp"}})
    assert host.call("ADD", broken, host.netns(), container_id="ctr2").error(2)
    reply = host.call("DEL", broken, netns)
    assert reply.returncode == 0, reply.stdout
    _assert_released(host, netns)


def test_check_after_lost_state_checks_with_a_rebuilt_config(host: Node) -> None:
    """Lost state is no proof the container is gone: CHECK asks the delegate, as DEL does."""
    netns = host.netns()
    added = host.call("ADD", host.conf(), netns)
    assert added.returncode == 0
    for saved in host.data_dir.iterdir():
        saved.unlink()
    checked = host.call("CHECK", host.conf(prevResult=added.json), netns)
    assert (checked.returncode, checked.stdout) == (0, "")
    never_added = host.call("CHECK", host.conf(prevResult=added.json), host.netns(), container_id="ctr9")
    assert never_added.returncode == 1 and json.loads(never_added.stdout)["code"] != 3


def test_del_after_the_netns_is_gone(host: Node) -> None:
    netns = host.netns()
    assert host.call("ADD", host.conf(), netns).returncode == 0
    host.namespaces.remove(netns)
    run_netns(["ip", "netns", "del", netns])
    assert host.call("DEL", host.conf(), netns).returncode == 0
    _assert_released(host)


def test_del_without_saved_state_still_releases_the_address(host: Node) -> None:
    netns = host.netns()
    assert host.call("ADD", host.conf(), netns).returncode == 0
    for saved in host.data_dir.iterdir():
        saved.unlink()
    assert host.call("DEL", host.conf(), netns).returncode == 0
    _assert_released(host, netns)


def test_del_with_subnet_env_and_state_gone_succeeds(host: Node) -> None:
    host.subnet_file.unlink()
    reply = host.call("DEL", host.conf(), host.netns())
    assert reply.returncode == 0
    assert "nothing to release" in reply.stderr


def test_gc_releases_attachments_the_runtime_no_longer_knows(host: Node) -> None:
    kept, stale = host.netns(), host.netns()
    conf = host.conf("1.1.0")
    assert host.call("ADD", conf, kept, container_id="kept").returncode == 0
    assert host.call("ADD", conf, stale, container_id="stale").returncode == 0
    valid = {"cni.dev/valid-attachments": [{"containerID": "kept", "ifname": "eth0"}]}
    reply = host.call("GC", {**conf, **valid}, CNI_CONTAINERID="", CNI_IFNAME="")
    assert reply.returncode == 0, reply.stdout
    assert host.state_files() == ["kept", "ovctest+kept+eth0"]
    assert host.allocations() == {"198.18.5.2": "kept"}


def test_gc_with_a_null_attachment_list_releases_every_attachment(host: Node) -> None:
    """libcni sends a runtime's empty Go slice as null: no attachment of the network is valid."""
    conf = host.conf("1.1.0")
    assert host.call("ADD", conf, host.netns(), container_id="stale").returncode == 0
    null = {"cni.dev/valid-attachments": None, "cni.dev/attachments": None}
    reply = host.call("GC", {**conf, **null}, CNI_CONTAINERID="", CNI_IFNAME="")
    assert reply.returncode == 0, reply.stdout
    _assert_released(host)


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_reads_the_valid_attachments_under_either_name(host: Node, key: str) -> None:
    """libcni sends both names (the second is the spec draft's); some runtimes send one."""
    conf = host.conf("1.1.0")
    assert host.call("ADD", conf, host.netns(), container_id="kept").returncode == 0
    assert host.call("ADD", conf, host.netns(), container_id="stale").returncode == 0
    valid = {key: [{"containerID": "kept", "ifname": "eth0"}]}
    assert host.call("GC", {**conf, **valid}, CNI_CONTAINERID="", CNI_IFNAME="").returncode == 0
    assert host.state_files() == ["kept", "ovctest+kept+eth0"]


def test_gc_without_the_valid_attachments_releases_nothing(host: Node) -> None:
    """A GC that does not say what is still in use is refused, not read as "nothing is"."""
    conf = host.conf("1.1.0")
    netns = host.netns()
    assert host.call("ADD", conf, netns, container_id="kept").returncode == 0
    before = host.allocations()
    reply = host.call("GC", conf, CNI_CONTAINERID="", CNI_IFNAME="")
    assert reply.returncode == 1
    error = json.loads(reply.stdout)
    assert error["code"] == 7 and "cni.dev/valid-attachments" in error["msg"]
    assert host.state_files() == ["kept", "ovctest+kept+eth0"]
    assert host.allocations() == before
    assert "eth0" in run_netns(["ip", "netns", "exec", netns, "ip", "-br", "link"]).stdout


def test_second_add_after_lost_state_leaves_the_first_attachment_alone(host: Node) -> None:
    """State lost (a wiped dataDir), then ADD again: the error must not tear down the live one."""
    netns = host.netns()
    assert host.call("ADD", host.conf(), netns).returncode == 0
    before = host.allocations()
    for saved in host.data_dir.iterdir():
        saved.unlink()
    reply = host.call("ADD", host.conf(), netns)
    assert reply.returncode == 1 and "already exists" in json.loads(reply.stdout)["msg"]
    assert host.allocations() == before
    assert "eth0" in run_netns(["ip", "netns", "exec", netns, "ip", "-br", "link"]).stdout
    assert host.call("DEL", host.conf(), netns).returncode == 0
    _assert_released(host, netns)
