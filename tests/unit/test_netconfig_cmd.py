"""config validate and the diff config set shows (the etcd side is in tests/integration)."""

import io
import json

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.ops import netconfig as netconfig_cmd


def test_diff_ignores_formatting_and_shows_changes() -> None:
    stored = b'{"Network": "198.18.0.0/16"}'
    assert netconfig_cmd.config_diff(stored, '{\n  "Network":"198.18.0.0/16"\n}\n', "/p/config") == ""
    diff = netconfig_cmd.config_diff(stored, '{"Network":"198.18.0.0/16","Backend":{"VNI":2}}', "/p/config")
    assert diff.startswith("--- /p/config (in etcd)\n+++ /p/config (new)\n")
    assert '+    "VNI": 2' in diff


def test_diff_from_an_absent_or_unparsable_config() -> None:
    diff = netconfig_cmd.config_diff(None, '{"Network": "198.18.0.0/16"}', "/p/config")
    assert diff.startswith("--- /p/config (absent)\n+++ /p/config (new)\n")
    assert '+  "Network": "198.18.0.0/16"' in diff
    assert "-{not json" in netconfig_cmd.config_diff(b"{not json", '{"Network": "198.18.0.0/16"}', "k")


def test_validate_prints_the_defaulted_view_or_the_agents_error() -> None:
    out, err = io.StringIO(), io.StringIO()
    where = netconfig_cmd.config_where("/coreos.com/network")
    text = '{"network": "198.18.0.0/16", "backend": {"type": "VXLAN"}}'
    assert netconfig_cmd.validate(text, where, out, err) == 0
    view = json.loads(out.getvalue())
    assert (view["SubnetLen"], view["SubnetMin"], view["SubnetMax"]) == (24, "198.18.1.0", "198.18.255.0")
    assert view["Backend"] == {"Type": "vxlan", "VNI": 1, "Port": 8472, "GBP": False, "Learning": False,
                               "DirectRouting": False, "MTU": None}  # fmt: skip
    assert netconfig_cmd.validate('{"Network": "198.18.0.0/16", "SubnetLen": 31}', where, out, err) == 1
    assert err.getvalue() == (
        "network config at /coreos.com/network/config: SubnetLen 31 is larger than 30; "
        "use a SubnetLen between 18 and 30 for Network 198.18.0.0/16\n"
    )


def test_validate_refuses_a_dual_stack_network() -> None:
    out, err = io.StringIO(), io.StringIO()
    text = '{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "2001:db8::/48"}'
    assert netconfig_cmd.validate(text, "network config", out, err) == 1
    assert out.getvalue() == ""
    assert err.getvalue().startswith("network config: EnableIPv6 true (a dual-stack network) is not")


def test_the_renumber_warning_counts_and_names_the_live_leases_left_outside() -> None:
    from ipaddress import IPv4Address, IPv4Network

    from overlayd.subnet.config import parse_network_config
    from overlayd.subnet.lease import Lease, LeaseAttrs

    def lease(cidr: str, host: int) -> Lease:
        attrs = LeaseAttrs(IPv4Address(f"192.0.2.{host}"), "vxlan", vni=1, vtep_mac="02:00:00:00:00:01")
        return Lease(IPv4Network(cidr), attrs)

    current = parse_network_config('{"Network": "198.18.0.0/16"}', backends=CONFIG_PARSERS)
    leases = [lease(f"198.18.{n}.0/24", n) for n in (200, 5, 201, 202, 203)]
    half = parse_network_config('{"Network": "198.18.0.0/17"}', backends=CONFIG_PARSERS)
    warning = netconfig_cmd._renumber_warning(current, half, leases)
    assert warning.startswith(
        "this change (from Network 198.18.0.0/16 to Network 198.18.0.0/17) does not hand out 4 of 5 live "
        "lease(s): 198.18.200.0/24 (192.0.2.200), 198.18.201.0/24 (192.0.2.201), "
        "198.18.202.0/24 (192.0.2.202) and 1 more."
    )
    assert warning.endswith("Add --force to write it anyway")
    wider = parse_network_config('{"Network": "198.16.0.0/14"}', backends=CONFIG_PARSERS)
    assert netconfig_cmd._renumber_warning(current, wider, leases) == ""
    assert netconfig_cmd._renumber_warning(None, half, leases).startswith(
        "this change (Network 198.18.0.0/17) does not hand out 4 of 5"
    )


def test_validate_says_what_a_config_without_backend_type_runs_and_the_fix() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert netconfig_cmd.validate('{"Network": "198.18.0.0/16"}', "my.json", out, err) == 0
    assert json.loads(out.getvalue())["Backend"] == {"Type": "udp", "Port": 8285}
    assert err.getvalue().startswith("my.json names no Backend.Type: running the udp backend, as flanneld")
    assert 'add "Backend": {"Type": "vxlan"} to the config' in err.getvalue()
    quiet = io.StringIO()
    assert netconfig_cmd.validate('{"Network": "198.18.0.0/16", "Backend": {"Type": "udp"}}', "my.json",
                                  io.StringIO(), quiet) == 0  # fmt: skip
    assert quiet.getvalue() == ""
