"""The lab's address plan and names, and one lab host: its namespace, address, agent and files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from overlayd.subnet.subnetenv import parse_keys

DEFAULT_ROOT = Path("/run/overlayd-lab")
LAB_NETWORK = "198.18.0.0/16"
DEFAULT_BACKEND = "vxlan"


def lab_network_config(backend_type: str = DEFAULT_BACKEND) -> str:
    """The lab's network config for a backend with its defaults."""
    return json.dumps({"Network": LAB_NETWORK, "Backend": {"Type": backend_type}})


DEFAULT_NETWORK_CONFIG = lab_network_config()
ETCD_PREFIX = "/coreos.com/network"
UNDERLAY_GATEWAY = IPv4Address("192.0.2.1")
ETCD_IP = IPv4Address("192.0.2.2")
FIRST_HOST_IP = IPv4Address("192.0.2.11")
MAX_HOSTS = 200
MAX_ETCD_MEMBERS = 3  # 192.0.2.2 .. .4: the addresses below the hosts' range
SHIPPED_CONFLIST = Path(__file__).parents[2] / "deploy" / "10-flannel.conflist"
METRICS_PORT = 9464  # each host serves /metrics, /healthz and /readyz on its own 127.0.0.1


@dataclass
class LabHost:
    name: str
    netns: str
    ip: str
    dir: str
    pid: int = 0
    agent_args: list[str] = field(default_factory=list)  # on top of the lab's, e.g. a short lease TTL
    containers: dict[str, str] = field(default_factory=dict)  # name -> IP, attached on this host

    @property
    def subnet_file(self) -> Path:
        return Path(self.dir) / "subnet.env"

    @property
    def log_file(self) -> Path:
        return Path(self.dir) / "agent.log"

    @property
    def run_wireguard(self) -> Path:
        """The host's own ``/run/wireguard`` (wireguard-go's UAPI sockets), bind-mounted there
        for its agent and its commands: every host's device has the same name."""
        return Path(self.dir) / "run-wireguard"

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run in the host: its network namespace, and a mount namespace of its own
        (``ip netns exec`` makes one) where ``/run/wireguard`` is the host's."""
        bind = 'mkdir -p "$1" /run/wireguard && mount --bind "$1" /run/wireguard && shift && exec "$@"'
        return ["ip", "netns", "exec", self.netns, "sh", "-c", bind, "sh", str(self.run_wireguard), *argv]

    def subnet_env(self) -> dict[str, str]:
        try:
            return parse_keys(self.subnet_file.read_text())
        except OSError:
            return {}

    def flannel_address(self) -> str | None:
        """The host's flannel.1 address (``<subnet>.0``) from its subnet.env, if written."""
        subnet = self.subnet_env().get("FLANNEL_SUBNET")
        return str(IPv4Address(subnet.split("/")[0]) - 1) if subnet else None
