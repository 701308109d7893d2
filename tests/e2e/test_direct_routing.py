"""Backend DirectRouting: hosts on one segment reach each other without VXLAN, as with flanneld.

flanneld routes a peer's subnet via the peer's PublicIP when that address is on its own segment,
and over VXLAN otherwise. A mixed cluster needs both sides to agree: a host answering over VXLAN
what arrived directly is dropped by a strict rp_filter.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest
from labtools import needs_lab, running_lab, status_json, wait_for

from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]

CONFIG = {"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": True}}


@pytest.fixture
def direct_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=2, converge=False, network_config=json.dumps(CONFIG)) as lab:
        yield lab


def peer_net(host: LabHost) -> str:
    return host.subnet_env().get("FLANNEL_SUBNET", "").replace(".1/", ".0/")


def routed(host: LabHost, peer: LabHost, how: str) -> bool:
    """``how``: "direct" (via the peer's underlay address) or "vxlan" (via flannel.1)."""
    routes = sh("ip", "-4", "route", "show", netns=host.netns)
    wanted = f"{peer_net(peer)} via {peer.ip} dev eth0" if how == "direct" else f"{peer_net(peer)} via "
    vxlan = how == "vxlan"
    return any(line.startswith(wanted) and ("flannel.1" in line) == vxlan for line in routes.splitlines())


def vxlan_sent(host: LabHost) -> int:
    [link] = json.loads(sh("ip", "-s", "-j", "link", "show", "flannel.1", netns=host.netns))
    return int(link["stats64"]["tx"]["packets"])


def container_ping(lab: Lab, source: str, target: str) -> bool:
    ping = ["ping", "-n", "-q", "-c", "2", "-W", "1", target]
    done = subprocess.run(["ip", "netns", "exec", lab.container_ns(source), *ping], capture_output=True)
    return done.returncode == 0


def test_same_segment_peers_are_routed_directly_and_reach_each_other(direct_lab: Lab) -> None:
    h1, h2 = direct_lab.hosts
    wait_for(lambda: routed(h1, h2, "direct") and routed(h2, h1, "direct"), 60, "direct routes")
    assert h2.ip not in sh("bridge", "fdb", "show", "dev", "flannel.1", netns=h1.netns)
    c1, c2 = direct_lab.add_container(h1, "c1"), direct_lab.add_container(h2, "c2")
    sent = vxlan_sent(h1), vxlan_sent(h2)
    assert container_ping(direct_lab, "c1", c2) and container_ping(direct_lab, "c2", c1)
    assert (vxlan_sent(h1), vxlan_sent(h2)) == sent, "no packet may take the VXLAN device"
    status = status_json(direct_lab, h1, "--cluster")
    assert peer_net(h2) in status["device"]["routes"]
    assert [row["programmed"] for row in status["leases"] if row["subnet"] == peer_net(h2)] == [True]

    # DirectRouting turned off: the same peers move to VXLAN, and still reach each other.
    off = {**CONFIG, "Backend": {"Type": "vxlan"}}
    direct_lab.etcd().etcdctl("put", f"{ETCD_PREFIX}/config", json.dumps(off))
    wait_for(lambda: routed(h1, h2, "vxlan") and routed(h2, h1, "vxlan"), 60, "VXLAN routes")
    assert not routed(h1, h2, "direct")
    sent = vxlan_sent(h1), vxlan_sent(h2)
    assert container_ping(direct_lab, "c1", c2) and container_ping(direct_lab, "c2", c1)
    assert vxlan_sent(h1) > sent[0] and vxlan_sent(h2) > sent[1]
    for host, name in ((h1, "c1"), (h2, "c2")):
        direct_lab.del_container(host, name)
