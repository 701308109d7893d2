"""``overlayd config get|set`` of an IPv6-only network against a real etcd: turning IPv4 off is
refused without --force (every IPv4 lease would be renumbered), a moved IPv6Network names the
IPv6-only leases it leaves out by IPv6 subnet and PublicIPv6, and get shows flannel's spelling."""

from __future__ import annotations

import json

from overlayd.lab.etcdserver import EtcdServer

from .test_config_cmd import overlayd, put_lease, stored

V6_ONLY = json.dumps({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48",
                      "Backend": {"Type": "vxlan"}})  # fmt: skip


def put_v6_only_lease(etcd: EtcdServer, prefix: str, n: int) -> None:
    """An IPv6-only lease as flanneld writes it."""
    value = json.dumps({"PublicIP": "0.0.0.0", "PublicIPv6": f"2001:db8::{n}", "BackendType": "vxlan",
                        "BackendV6Data": {"VNI": 1, "VtepMAC": f"02:00:00:00:06:{n:02x}"}})  # fmt: skip
    etcd.etcdctl("put", f"{prefix}/subnets/0.0.0.0-0&2001:db8:1000:{n}::-64", value)


def test_turning_ipv4_off_is_refused_without_force_naming_the_ipv4_leases(
    etcd_server: EtcdServer, prefix: str
) -> None:
    first = '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}}'
    assert overlayd(etcd_server, prefix, "set", "-", stdin=first).returncode == 0
    put_lease(etcd_server, prefix, "198.18.5.0/24", 11)
    refused = overlayd(etcd_server, prefix, "set", "-", stdin=V6_ONLY)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.startswith(
        "refused: this change (from Network 198.18.0.0/16 to IPv6-only IPv6Network 2001:db8:1000::/48) "
        "does not hand out 1 of 1 live lease(s): 198.18.5.0/24 (192.0.2.11)."
    ), refused.stderr
    assert '+  "EnableIPv4": false' in refused.stdout
    assert stored(etcd_server, prefix) == first
    forced = overlayd(etcd_server, prefix, "set", "-", "--force", stdin=V6_ONLY)
    assert forced.returncode == 0, forced.stderr
    assert stored(etcd_server, prefix) == V6_ONLY


def test_moving_the_ipv6_network_names_the_ipv6_only_leases_it_leaves_out(
    etcd_server: EtcdServer, prefix: str
) -> None:
    assert overlayd(etcd_server, prefix, "set", "-", stdin=V6_ONLY).returncode == 0
    for n in (5, 6):
        put_v6_only_lease(etcd_server, prefix, n)
    moved = V6_ONLY.replace("2001:db8:1000::/48", "2001:db8:2000::/48")
    refused = overlayd(etcd_server, prefix, "set", "-", stdin=moved)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.startswith(
        "refused: this change (from IPv6-only IPv6Network 2001:db8:1000::/48 to IPv6-only IPv6Network "
        "2001:db8:2000::/48) does not hand out 2 of 2 live lease(s): 2001:db8:1000:5::/64 (2001:db8::5), "
        "2001:db8:1000:6::/64 (2001:db8::6)."
    ), refused.stderr
    # A wider IPv6Network hands out both: written without --force.
    wider = V6_ONLY.replace("2001:db8:1000::/48", "2001:db8:1000::/40")
    done = overlayd(etcd_server, prefix, "set", "-", stdin=wider)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_get_shows_an_ipv6_only_config_as_the_agent_reads_it(etcd_server: EtcdServer, prefix: str) -> None:
    assert overlayd(etcd_server, prefix, "set", "-", stdin=V6_ONLY).returncode == 0
    done = overlayd(etcd_server, prefix, "get")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout.split("# as the agent reads it (defaults filled in):\n", 1)[1])
    assert view["EnableIPv4"] is False and "Network" not in view and view["IPv6SubnetLen"] == 64
