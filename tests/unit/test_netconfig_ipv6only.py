"""``overlayd config validate`` of an IPv6-only network: flannel's JSON with EnableIPv4 false and
no IPv4 keys, and the agent's refusal of a backend that carries IPv4 only."""

import io
import json

from overlayd.ops import netconfig as netconfig_cmd

V6_ONLY = json.dumps(
    {
        "EnableIPv4": False,
        "EnableIPv6": True,
        "IPv6Network": "2001:db8:1000::/48",
        "Backend": {"Type": "vxlan"},
    }
)


def test_an_ipv6_only_config_is_shown_as_flannel_spells_it_without_network() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert netconfig_cmd.validate(V6_ONLY, "network config", out, err) == 0, err.getvalue()
    view = json.loads(out.getvalue())
    assert view == {
        "EnableIPv4": False,
        "EnableIPv6": True,
        "IPv6Network": "2001:db8:1000::/48",
        "IPv6SubnetLen": 64,
        "IPv6SubnetMin": "2001:db8:1000:1::",
        "IPv6SubnetMax": "2001:db8:1000:ffff::",
        "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "GBP": False, "Learning": False,
                    "DirectRouting": False, "MTU": None},
    }  # fmt: skip
    assert err.getvalue() == ""


def test_the_ignored_ipv4_keys_of_an_ipv6_only_config_are_not_shown() -> None:
    """flanneld ignores them with EnableIPv4 false; showing them would say they are in force."""
    out, err = io.StringIO(), io.StringIO()
    text = json.dumps({**json.loads(V6_ONLY), "Network": "198.18.0.0/16", "SubnetLen": 25})
    assert netconfig_cmd.validate(text, "network config", out, err) == 0
    assert "Network" not in json.loads(out.getvalue()) and "SubnetLen" not in json.loads(out.getvalue())


def test_an_ipv6_only_config_for_udp_is_refused_naming_the_backends_that_serve_it() -> None:
    out, err = io.StringIO(), io.StringIO()
    text = V6_ONLY.replace('"vxlan"', '"udp"')
    assert netconfig_cmd.validate(text, "network config", out, err) == 1
    assert out.getvalue() == ""
    assert err.getvalue() == (
        "network config: Backend.Type 'udp' carries IPv4 only, and EnableIPv4 false makes the network "
        "IPv6-only; use Backend alloc, host-gw, vxlan, wireguard, or set EnableIPv4 true with an IPv4 "
        "Network\n"
    )
