"""A host behind NAT: ``--public-ip`` is what peers send to, the device sends from the interface.

flanneld publishes ``--public-ip`` in the lease but creates its VXLAN device with the external
interface's own address as ``local``: behind NAT the public address is not on the host, and the
kernel cannot send from an address it does not have. Here nftables rules play the NAT router:
what h1 sends to the public address goes to h2, and what h2 sends leaves with the public source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import metric, needs_lab, running_lab, wait_for

from overlayd.lab.namespaces import ETCD_PREFIX, Lab, sh

pytestmark = [needs_lab, pytest.mark.root]

PUBLIC_IP = "192.0.2.250"  # on no host of the lab: reachable only through h1's NAT rules


def nat_rules(lab: Lab, host_ip: str | None = None) -> str:
    """nftables rules that put a host behind PUBLIC_IP, as a NAT router between hosts would:
    on a peer (``host_ip`` given) what is sent to PUBLIC_IP goes to the host; on the host itself
    (no ``host_ip``) the VXLAN packets it sends leave with PUBLIC_IP as the source."""
    if host_ip is not None:
        chain = f"type nat hook output priority -100; ip daddr {PUBLIC_IP} dnat to {host_ip};"
    else:
        chain = f"type nat hook postrouting priority 100; udp dport 8472 snat to {PUBLIC_IP};"
    return f"table ip {lab.name}nat {{\n  chain nat {{\n    {chain}\n  }}\n}}\n"


@pytest.fixture
def nat_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=1) as lab:
        h2 = lab.add_host(start_agent=False, agent_args=[f"--public-ip={PUBLIC_IP}"])
        for host, rules in ((lab.hosts[0], nat_rules(lab, h2.ip)), (h2, nat_rules(lab))):
            path = Path(host.dir) / "nat.nft"
            path.write_text(rules)
            sh("nft", "-f", str(path), netns=host.netns)
        lab.start_agent(h2)
        lab.wait_converged(timeout=60)
        yield lab


def test_public_ip_is_published_and_the_device_sends_from_the_interface(nat_lab: Lab) -> None:
    h1, h2 = nat_lab.hosts
    device = json.loads(sh("ip", "-j", "-d", "link", "show", "flannel.1", netns=h2.netns))[0]
    assert device["linkinfo"]["info_data"]["local"] == h2.ip
    subnet = h2.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0-")
    value = nat_lab.etcd().etcdctl("get", "--print-value-only", f"{ETCD_PREFIX}/subnets/{subnet}")
    assert json.loads(value)["PublicIP"] == PUBLIC_IP
    fdb = sh("bridge", "fdb", "show", "dev", "flannel.1", netns=h1.netns)
    assert f"dst {PUBLIC_IP}" in fdb
    assert nat_lab.ping(h1, h2.flannel_address() or "", count=2)
    assert nat_lab.ping(h2, h1.flannel_address() or "", count=2)


SECOND_IP = "192.0.2.251"  # a second address on h2's eth0, published as its PublicIP


@pytest.fixture
def two_address_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=1) as lab:
        h2 = lab.add_host(start_agent=False, agent_args=["--iface=eth0", f"--public-ip={SECOND_IP}"])
        sh("ip", "addr", "add", f"{SECOND_IP}/24", "dev", "eth0", netns=h2.netns)
        lab.start_agent(h2)
        lab.wait_converged(timeout=60)
        yield lab


def test_a_node_sending_from_another_address_than_its_public_ip_is_named_with_the_fix(
    two_address_lab: Lab,
) -> None:
    """As flanneld, the device sends from the interface's first address while the lease says
    ``--public-ip``. flanneld peers accept that; an allowlist cannot know the address, drops
    the node's packets, and must say so with the fixes instead of dropping them silently."""
    lab = two_address_lab
    h1, h2 = lab.hosts
    target = h1.flannel_address() or ""
    assert not lab.ping(h2, target, count=2), "the allowlist drops what h2 sends from its first address"
    wait_for(lambda: metric(h1, "overlayd_vxlan_ingress_dropped_sources") == 1, 15, "the drop gauge")
    warning = next(line for line in h1.log_file.read_text().splitlines() if "allowlist dropped" in line)
    assert f"packets from {h2.ip}:" in warning
    assert "--public-ip" in warning and "--vxlan-ingress-allowlist=false" in warning

    lab.stop_agent(h1)  # the second fix named: no allowlist on the receiving node
    h1.agent_args.append("--vxlan-ingress-allowlist=false")
    lab.start_agent(h1)
    wait_for(lambda: lab.ping(h2, target, count=2), 30, "h2 reaching h1 without the allowlist")
