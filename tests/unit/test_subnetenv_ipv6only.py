"""subnet.env of an IPv6-only network: flanneld's WriteSubnetFile writes the IPv6 pair alone (its
IPv4 lines only with EnableIPv4), then the MTU and IPMASQ; read back at the next start."""

from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.base.atomicfile import write_atomic
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs
from overlayd.subnet.subnetenv import SubnetEnv, parse_keys, previous_ipv6_subnet, previous_subnet

V6_ONLY = parse_network_config(
    '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:1000::/48", '
    '"Backend": {"Type": "vxlan"}}',
    backends=CONFIG_PARSERS,
)
LEASE = Lease(
    NO_IPV4_SUBNET,
    LeaseAttrs(
        NO_PUBLIC_IP, "vxlan", vni=1, public_ipv6=IPv6Address("2001:db8::b"), vtep_mac_v6="02:00:00:00:00:0b"
    ),
    ipv6_subnet=IPv6Network("2001:db8:1000:2e::/64"),
)
# What flanneld v0.20.2 writes for this lease and config (main.go WriteSubnetFile), byte for byte.
FLANNELD_FILE = (
    "FLANNEL_IPV6_NETWORK=2001:db8:1000::/48\n"
    "FLANNEL_IPV6_SUBNET=2001:db8:1000:2e::1/64\n"
    "FLANNEL_MTU=1430\n"
    "FLANNEL_IPMASQ=false\n"
)


def test_an_ipv6_only_file_is_flanneld_s_byte_for_byte() -> None:
    env = SubnetEnv.of(V6_ONLY, LEASE, 1430, False)
    assert (env.network, env.subnet) == (None, None)
    assert env.own_subnet == IPv6Network("2001:db8:1000:2e::/64")
    assert env.render() == FLANNELD_FILE
    assert SubnetEnv.of(V6_ONLY, LEASE, 1430, True).render() == FLANNELD_FILE.replace("false", "true")


def test_no_line_names_the_unset_ipv4_half() -> None:
    text = SubnetEnv.of(V6_ONLY, LEASE, 1430, False).render()
    assert "0.0.0.0" not in text
    assert sorted(parse_keys(text)) == sorted(
        f"FLANNEL_{key}" for key in ("IPV6_NETWORK", "IPV6_SUBNET", "MTU", "IPMASQ")
    )


def test_the_next_start_reads_the_ipv6_subnet_back_and_no_ipv4_one(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    write_atomic(path, SubnetEnv.of(V6_ONLY, LEASE, 1430, False).render())
    assert path.read_text() == FLANNELD_FILE
    assert previous_ipv6_subnet(path) == IPv6Network("2001:db8:1000:2e::/64")
    assert previous_subnet(path) is None
