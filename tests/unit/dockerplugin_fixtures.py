"""The Docker plugin's unit tests' common parts: a host's subnet.env, a recorder of the bridge
and veth calls (the real ones run in tests/e2e/test_docker_plugin.py), and a plugin over them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overlayd.dockerplugin.driver import DockerPlugin
from overlayd.dockerplugin.hoststore import HostLocalStore
from overlayd.dockerplugin.settings import SharedSettings, read_host_pool
from overlayd.dockerplugin.state import StateFile

POOL = "198.18.7.0/28"
REQUEST_ADDRESS = "IpamDriver.RequestAddress"
SUBNET_ENV = (
    "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.7.1/28\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
)


@dataclass
class RecordedLinks:
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    fail: bool = False
    veth_failures: int = 0

    def ensure_bridge(self, name: str, gateway: str, prefixlen: int, mtu: int) -> int:
        self.calls.append(("bridge", name, gateway, prefixlen, mtu))
        if self.fail:
            raise OSError("netlink said no")
        return 7

    def add_veth(self, host_end: str, container_end: str, bridge_index: int, mtu: int, hairpin: bool) -> None:
        self.calls.append(("veth", host_end, container_end, bridge_index, mtu, hairpin))
        if self.veth_failures:
            self.veth_failures -= 1
            raise OSError("master device gone")

    def remove(self, name: str) -> bool:
        self.calls.append(("remove", name))
        return True


Env = tuple[SharedSettings, RecordedLinks]


def make_env(tmp_path: Path) -> Env:
    """subnet.env of a /28 in ``tmp_path``, settings pointing there, and a fresh recorder."""
    (tmp_path / "subnet.env").write_text(SUBNET_ENV)
    settings = SharedSettings("cbr0", tmp_path / "subnet.env", tmp_path / "ipam" / "cbr0", "cni0", True, None)
    return settings, RecordedLinks()


def plugin_for(settings: SharedSettings, links: RecordedLinks) -> DockerPlugin:
    state = StateFile(settings.subnet_file.parent / "state.json")
    store = HostLocalStore(settings.store_dir)
    return DockerPlugin(settings, lambda: read_host_pool(settings), store, links, state)
