"""subnet.env of a dual-stack network: flanneld's IPv6 lines, in its order, read back at start."""

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.base.atomicfile import write_atomic
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs
from overlayd.subnet.subnetenv import SubnetEnv, previous_ipv6_subnet, previous_subnet

DUAL = parse_network_config(
    json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48"}),
    backends=CONFIG_PARSERS,
)
LEASE = Lease(IPv4Network("198.18.46.0/24"), LeaseAttrs(IPv4Address("192.0.2.1")),
              ipv6_subnet=IPv6Network("2001:db8:1000:2e::/64"))  # fmt: skip


def test_dual_stack_lines_follow_the_ipv4_ones_as_flanneld_writes_them() -> None:
    # flanneld's WriteSubnetFile: IPv4 pair, IPv6 pair, then MTU and IPMASQ.
    assert SubnetEnv.of(DUAL, LEASE, 1450, True).render() == (
        "FLANNEL_NETWORK=198.18.0.0/16\n"
        "FLANNEL_SUBNET=198.18.46.1/24\n"
        "FLANNEL_IPV6_NETWORK=2001:db8:1000::/48\n"
        "FLANNEL_IPV6_SUBNET=2001:db8:1000:2e::1/64\n"
        "FLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\n"
    )


def test_no_ipv6_lines_unless_both_config_and_lease_are_dual_stack() -> None:
    ipv4_only = SubnetEnv.of(DUAL, Lease(LEASE.subnet, LEASE.attrs), 1450, False).render()
    assert "IPV6" not in ipv4_only and ipv4_only.startswith("FLANNEL_NETWORK=198.18.0.0/16\n")
    from dataclasses import replace

    assert "IPV6" not in SubnetEnv.of(replace(DUAL, ipv6=None), LEASE, 1450, False).render()


def test_previous_ipv6_subnet_round_trip_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    assert previous_ipv6_subnet(path) is None
    write_atomic(path, SubnetEnv.of(DUAL, LEASE, 1450, False).render())
    assert previous_ipv6_subnet(path) == IPv6Network("2001:db8:1000:2e::/64")
    assert previous_subnet(path) == IPv4Network("198.18.46.0/24")
    path.write_text("FLANNEL_IPV6_SUBNET=198.18.46.1/24\n")
    assert previous_ipv6_subnet(path) is None
