"""The Docker plugin's request handling: libnetwork's calls in order, restarts, and bad requests.

The address store is the real one in a temporary directory; the kernel side is a recorder of the
bridge and veth calls (the real links are exercised in tests/e2e/test_docker_plugin.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dockerplugin_fixtures import POOL, SUBNET_ENV, Env, make_env, plugin_for

from overlayd.dockerplugin.driver import DockerPlugin, veth_names
from overlayd.dockerplugin.hoststore import OWNER
from overlayd.dockerplugin.settings import SettingsError, parse_host_pool

NID = "a1" * 32
EID = "e5" * 32
REQUEST_ADDRESS = "IpamDriver.RequestAddress"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path)


def ok(plugin: DockerPlugin, method: str, body: Any) -> dict[str, Any]:
    reply = plugin.handle(method, body)
    assert reply.status == 200, reply
    return reply.body


def err(plugin: DockerPlugin, method: str, body: Any) -> str:
    reply = plugin.handle(method, body)
    assert reply.status != 200 and set(reply.body) == {"Err"}, reply
    return str(reply.body["Err"])


def test_a_container_lifecycle_in_libnetworks_order(env: Env) -> None:
    settings, links = env
    plugin = plugin_for(settings, links)
    assert ok(plugin, "Plugin.Activate", None) == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert ok(plugin, "NetworkDriver.GetCapabilities", None)["Scope"] == "local"
    pool = ok(plugin, "IpamDriver.RequestPool", {"AddressSpace": "overlayd", "Pool": "", "V6": False})
    assert pool == {"PoolID": POOL, "Pool": "198.18.7.0/28",
                    "Data": {"com.docker.network.gateway": "198.18.7.1/28"}}  # fmt: skip
    ok(plugin, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [
        {"AddressSpace": "overlayd", "Pool": "198.18.7.0/28", "Gateway": "198.18.7.1/28"}]})  # fmt: skip
    assert links.calls == [("bridge", "cni0", "198.18.7.1", 28, 1450)]
    address = ok(plugin, REQUEST_ADDRESS, {"PoolID": POOL, "Address": "", "Options": {}})
    assert address == {"Address": "198.18.7.2/28", "Data": {}}
    assert (settings.store_dir / "198.18.7.2").read_bytes() == OWNER.encode() + b"\r\ndocker"
    assert ok(plugin, "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID,
              "Interface": {"Address": "198.18.7.2/28", "MacAddress": "02:42:c6:12:07:02"}},
              ) == {}  # fmt: skip
    join = ok(plugin, "NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/x"})
    host_end, container_end = veth_names(EID)
    assert join == {
        "InterfaceName": {"SrcName": container_end, "DstPrefix": "eth"},
        "Gateway": "198.18.7.1",
        "StaticRoutes": [{"Destination": "198.18.0.0/16", "RouteType": 0, "NextHop": "198.18.7.1"}],
    }
    assert links.calls[-1] == ("veth", host_end, container_end, 7, 1450, True)
    assert len(host_end) <= 15 and len(container_end) <= 15

    restarted = plugin_for(settings, links)  # a plugin restart between join and leave
    ok(restarted, "NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": EID})
    ok(restarted, "NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})
    assert links.calls[-2:] == [("remove", host_end), ("remove", container_end)]
    ok(restarted, "IpamDriver.ReleaseAddress", {"PoolID": POOL, "Address": "198.18.7.2"})
    assert not (settings.store_dir / "198.18.7.2").exists()
    ok(restarted, "NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    ok(restarted, "IpamDriver.ReleaseAddress", {"PoolID": POOL, "Address": "198.18.7.1"})  # gateway
    ok(restarted, "IpamDriver.ReleasePool", {"PoolID": POOL})
    assert plugin_for(settings, links).state.networks == {}
    # a repeated Leave or DeleteEndpoint (dockerd retrying after a restart) is no error
    ok(restarted, "NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": EID})
    ok(restarted, "NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})


def test_a_28_hands_out_13_addresses_then_says_it_is_full(env: Env) -> None:
    settings, links = env
    plugin = plugin_for(settings, links)
    got = [ok(plugin, REQUEST_ADDRESS, {"PoolID": POOL})["Address"] for _ in range(13)]
    assert got == [f"198.18.7.{n}/28" for n in range(2, 15)]
    assert f"no free address left in {POOL}" in err(plugin, REQUEST_ADDRESS, {"PoolID": POOL})
    ok(plugin, "IpamDriver.ReleaseAddress", {"PoolID": POOL, "Address": "198.18.7.5"})
    assert ok(plugin, REQUEST_ADDRESS, {"PoolID": POOL})["Address"] == "198.18.7.5/28"


def test_a_cni_containers_address_is_neither_given_nor_released(env: Env) -> None:
    settings, links = env
    plugin = plugin_for(settings, links)
    settings.store_dir.mkdir(parents=True)
    held = settings.store_dir / "198.18.7.2"
    held.write_bytes(b"cnicontainer1\r\neth0")
    assert ok(plugin, REQUEST_ADDRESS, {"PoolID": POOL})["Address"] == "198.18.7.3/28"
    wanted = {"PoolID": POOL, "Address": "198.18.7.2"}
    assert "198.18.7.2 is in use (by CNI container cnicontainer1)" in err(plugin, REQUEST_ADDRESS,
                                                                          wanted)  # fmt: skip
    assert "held by CNI container cnicontainer1" in err(plugin, "IpamDriver.ReleaseAddress", wanted)
    assert held.read_bytes() == b"cnicontainer1\r\neth0"


@pytest.mark.parametrize(
    ("method", "body", "named"),
    [
        ("NetworkDriver.Nope", {}, "unknown method 'NetworkDriver.Nope'"),
        ("NetworkDriver.CreateNetwork", "text", "must be a JSON object"),
        ("NetworkDriver.CreateNetwork", {}, "NetworkID is missing"),
        ("NetworkDriver.CreateNetwork", {"NetworkID": 5}, "NetworkID 5 is not a string"),
        ("NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": "172.17.0.0/16"}]},
         f"pool 172.17.0.0/16 is not this host's subnet {POOL}; create the network with --ipam-driver"),
        ("NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": []}, "must hold exactly one pool"),
        ("NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv6Data": [{"Pool": "2001:db8::/64"}]},
         "IPv6"),
        ("NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID},
         f"network {NID[:12]} is unknown"),
        ("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": "short"},
         "EndpointID 'short' is not a Docker ID"),
        ("IpamDriver.RequestPool", {"Pool": "198.18.9.0/28"}, "Pool 198.18.9.0/28 is not this host's subnet"),
        ("IpamDriver.RequestPool", {"SubPool": "198.18.7.0/29"}, "SubPool 198.18.7.0/29 (--ip-range)"),
        (REQUEST_ADDRESS, {"PoolID": "198.18.8.0/28"}, "PoolID 198.18.8.0/28 is no longer"),
        (REQUEST_ADDRESS, {"PoolID": POOL, "Address": "198.18.7.15"}, "not assignable"),
        (REQUEST_ADDRESS, {"PoolID": POOL, "Address": "nope"}, "Address 'nope' is not"),
        (REQUEST_ADDRESS, {"PoolID": POOL, "Address": "198.18.7.9",
                                       "Options": {"RequestAddressType": "com.docker.network.gateway"}},
         "gateway 198.18.7.9 is not this host's gateway 198.18.7.1"),
    ],
)  # fmt: skip
def test_a_bad_request_is_answered_with_err_naming_it_and_changes_nothing(
    env: Env, method: str, body: Any, named: str
) -> None:
    settings, links = env
    plugin = plugin_for(settings, links)
    assert named in err(plugin, method, body)
    assert plugin.state.networks == {} and plugin.state.endpoints == {}
    assert not settings.store_dir.exists() or not any(settings.store_dir.glob("198.*"))


def test_a_failing_kernel_call_is_an_err_reply_not_a_crash(env: Env) -> None:
    settings, links = env
    links.fail = True
    plugin = plugin_for(settings, links)
    message = err(plugin, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": POOL}]})
    assert "OSError: netlink said no" in message
    assert plugin.state.networks == {}


def test_no_subnet_env_names_the_file_and_the_fix(env: Env) -> None:
    settings, links = env
    settings.subnet_file.unlink()
    message = err(plugin_for(settings, links), "IpamDriver.RequestPool", {})
    assert f"cannot read {settings.subnet_file}" in message and "start `overlayd run`" in message


def test_subnet_env_gateway_rule_matches_the_cni_plugin() -> None:
    bare = parse_host_pool(SUBNET_ENV.replace("198.18.7.1/28", "198.18.7.0/28"), "x")
    assert str(bare.gateway) == "198.18.7.1" and bare.mtu == 1450
    assert parse_host_pool(SUBNET_ENV, "x", mtu_override=1400).mtu == 1400
    with pytest.raises(SettingsError, match="x has no FLANNEL_MTU"):
        parse_host_pool("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.7.1/28\n", "x")


def test_an_unreadable_state_file_is_kept_aside_and_the_plugin_starts_empty(
    env: Env,
) -> None:
    settings, links = env
    state = settings.subnet_file.parent / "state.json"
    state.write_text("{not json")
    plugin = plugin_for(settings, links)
    assert plugin.state.networks == {}
    assert state.with_suffix(".bad").read_text() == "{not json"


def test_join_checks_the_bridge_again_when_the_veth_cannot_join_it(env: Env) -> None:
    """The bridge is checked when a network is made, not on every Join; a Join that fails (the
    bridge deleted meanwhile) checks, re-makes it and tries once more."""
    settings, links = env
    plugin = plugin_for(settings, links)
    ok(plugin, "NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": POOL}]})
    ok(plugin, "NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID,
                                                "Interface": {"Address": "198.18.7.9/28"}})  # fmt: skip
    links.calls.clear()
    ok(plugin, "NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID})
    assert [call[0] for call in links.calls] == ["veth"]
    links.calls.clear()
    links.veth_failures = 1
    ok(plugin, "NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID})
    assert [call[0] for call in links.calls] == ["veth", "bridge", "veth"]
    links.veth_failures = 2
    assert "master device gone" in err(plugin, "NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID})


def test_a_second_pool_request_without_a_subnet_names_the_fix_instead_of_looping(env: Env) -> None:
    """dockerd asks again, holding the first pool, when the subnet is routed on the host already
    (cni0): answering the same pool for ever would hang `docker network create`."""
    settings, links = env
    plugin = plugin_for(settings, links)
    assert ok(plugin, "IpamDriver.RequestPool", {"Pool": ""})["Pool"] == POOL
    message = err(plugin, "IpamDriver.RequestPool", {"Pool": ""})
    assert f"--subnet {POOL} NAME" in message and "routed here already" in message
    assert ok(plugin, "IpamDriver.RequestPool", {"Pool": POOL})["Pool"] == POOL  # named: no check
    ok(plugin, "IpamDriver.ReleasePool", {"PoolID": POOL})
    ok(plugin, "IpamDriver.ReleasePool", {"PoolID": POOL})
    assert ok(plugin, "IpamDriver.RequestPool", {})["Pool"] == POOL
