"""``fits_config`` in an IPv6-only network: an IPv6-only lease of the IPv6 pool fits; a lease
with an IPv4 subnet, or one outside the pool, does not (and nothing asks for the IPv4 Network)."""

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.allocate import fits_config
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs

V6_ONLY = parse_network_config(
    json.dumps({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48",
                "IPv6SubnetMax": "2001:db8:1000:ff::", "Backend": {"Type": "vxlan"}}),
    backends=CONFIG_PARSERS,
)  # fmt: skip
ATTRS = LeaseAttrs(
    NO_PUBLIC_IP, "vxlan", vni=1, public_ipv6=IPv6Address("2001:db8::5"), vtep_mac_v6="02:00:00:00:06:05"
)


@pytest.mark.parametrize(
    ("subnet", "subnet6", "fits"),
    [
        (NO_IPV4_SUBNET, "2001:db8:1000:5::/64", True),
        (NO_IPV4_SUBNET, "2001:db8:1000:100::/64", False),  # past IPv6SubnetMax
        (NO_IPV4_SUBNET, "2001:db8:1000:5::/80", False),  # another IPv6SubnetLen
        (NO_IPV4_SUBNET, "2001:db8:2000:5::/64", False),  # outside IPv6Network
        (IPv4Network("198.18.5.0/24"), "2001:db8:1000:5::/64", False),  # dual-stack, from before
        (IPv4Network("198.18.5.0/24"), None, False),  # IPv4-only, from before
    ],
)
def test_an_ipv6_only_config_fits_ipv6_only_leases_of_its_pool(
    subnet: IPv4Network, subnet6: str | None, fits: bool
) -> None:
    attrs = ATTRS if subnet == NO_IPV4_SUBNET else LeaseAttrs(IPv4Address("192.0.2.5"), "vxlan", vni=1)
    lease = Lease(subnet, attrs, ipv6_subnet=IPv6Network(subnet6) if subnet6 else None)
    assert fits_config(V6_ONLY, lease) is fits
