"""flannel's vxlan example of the extension backend (its Documentation/extension.md, with ``ip``
in place of ``arp`` and ``replace`` in place of ``add``): PreStartupCommand makes the device and
prints its MAC, which peers read on stdin to program neighbour and FDB entries."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from labtools import needs_lab, running_lab, wait_for

from overlayd.lab.hosts import ETCD_PREFIX, LAB_NETWORK
from overlayd.lab.namespaces import Lab, LabHost, sh

pytestmark = needs_lab
DEVICE = "flext"
CONFIG = json.dumps({"Network": LAB_NETWORK, "Backend": {
    "Type": "extension",
    "PreStartupCommand": f"ip link del {DEVICE} 2>/dev/null; "
    f"ip link add {DEVICE} type vxlan id 7 dstport 8472 dev eth0 nolearning && "
    f"cat /sys/class/net/{DEVICE}/address",
    "PostStartupCommand": f"ip addr replace ${{SUBNET%/*}}/32 dev {DEVICE} && ip link set {DEVICE} up",
    "SubnetAddCommand": f"read VTEP; GW=${{SUBNET%/*}}; "
    f"ip route replace $SUBNET via $GW dev {DEVICE} onlink && "
    f"ip neigh replace $GW lladdr $VTEP dev {DEVICE} nud permanent && "
    f"bridge fdb replace $VTEP dev {DEVICE} self dst $PUBLIC_IP permanent",
    "SubnetRemoveCommand": f"read VTEP; GW=${{SUBNET%/*}}; ip route del $SUBNET via $GW dev {DEVICE} onlink; "
    f"ip neigh del $GW dev {DEVICE}; bridge fdb del $VTEP dev {DEVICE} self",
}})  # fmt: skip


@pytest.fixture(scope="module")
def vxlan_ext_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory, hosts=2, network_config=CONFIG) as lab:
        lab.add_containers(1)
        yield lab


def device_mac(host: LabHost) -> str:
    return json.loads(sh("ip", "-j", "link", "show", DEVICE, netns=host.netns))[0]["address"]


def test_the_mac_is_published_and_peers_build_a_vxlan_data_path_from_it(vxlan_ext_lab: Lab) -> None:
    h1, h2 = vxlan_ext_lab.hosts
    for host in (h1, h2):
        key = host.subnet_env()["FLANNEL_SUBNET"].replace(".1/", ".0-")
        value = vxlan_ext_lab.etcd().etcdctl("get", f"{ETCD_PREFIX}/subnets/{key}", "--print-value-only")
        assert value.strip() == (f'{{"PublicIP":"{host.ip}","PublicIPv6":null,"BackendType":"extension",'
                                 f'"BackendData":"{device_mac(host)}"}}')  # fmt: skip

    def fdb_of(host: LabHost) -> set[tuple[str, str]]:
        entries = json.loads(sh("bridge", "-j", "fdb", "show", "dev", DEVICE, netns=host.netns))
        return {(entry["mac"], entry.get("dst", "")) for entry in entries}

    wait_for(lambda: (device_mac(h2), h2.ip) in fdb_of(h1) and (device_mac(h1), h1.ip) in fdb_of(h2),
             20, "each host's FDB entry for the other's MAC")  # fmt: skip
    wait_for(lambda: vxlan_ext_lab.container_ping_table()[1], 30, "container pings over the commands' VXLAN")
