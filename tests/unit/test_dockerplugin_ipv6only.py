"""The Docker network plugin (IPv4 only) on a host of an IPv6-only network: a clear refusal
naming the file and the CNI plugin, not "is the agent running?"."""

import pytest

from overlayd.dockerplugin.settings import SettingsError, parse_host_pool

V6_ONLY = (
    "FLANNEL_IPV6_NETWORK=2001:db8::/48\nFLANNEL_IPV6_SUBNET=2001:db8:0:5::1/64\n"
    "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
)


def test_an_ipv6_only_subnet_env_is_refused_naming_the_cni_plugin() -> None:
    with pytest.raises(SettingsError) as raised:
        parse_host_pool(V6_ONLY, "/run/flannel/subnet.env")
    assert str(raised.value) == (
        "/run/flannel/subnet.env is an IPv6-only network's (FLANNEL_IPV6_SUBNET 2001:db8:0:5::1/64, no "
        "FLANNEL_SUBNET): the Docker network plugin gives containers IPv4 addresses only; attach them "
        "with the CNI plugin (overlayd cni), which gives them IPv6 ones"
    )


def test_a_dual_stack_subnet_env_still_gives_the_ipv4_pool() -> None:
    dual = "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\n" + V6_ONLY
    pool = parse_host_pool(dual, "x")
    assert (str(pool.gateway), pool.mtu) == ("198.18.5.1", 1430)
