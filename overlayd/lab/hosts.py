"""The lab's address plan and names, and one lab host: its namespace, address, agent and files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from overlayd.subnet.subnetenv import parse_keys

DEFAULT_ROOT = Path("/run/overlayd-lab")
LAB_NETWORK = "198.18.0.0/16"
LAB_IPV6_NETWORK = "2001:db8:1000::/48"  # the overlay's IPv6 half, inside 2001:db8::/32
DEFAULT_BACKEND = "vxlan"


def lab_network_config(backend_type: str = DEFAULT_BACKEND, ipv6: bool = False, ipv4: bool = True) -> str:
    """The lab's network config for a backend with its defaults (``ipv6``: dual-stack; without
    ``ipv4`` too: IPv6-only)."""
    config: dict[str, object] = {"Network": LAB_NETWORK} if ipv4 else {"EnableIPv4": False}
    if ipv6 or not ipv4:
        config |= {"EnableIPv6": True, "IPv6Network": LAB_IPV6_NETWORK}
    return json.dumps(config | {"Backend": {"Type": backend_type}})


DEFAULT_NETWORK_CONFIG = lab_network_config()
ETCD_PREFIX = "/coreos.com/network"
UNDERLAY_GATEWAY = IPv4Address("192.0.2.1")
IPV6_UNDERLAY_PREFIX = 64  # the underlay's IPv6 segment, 2001:db8::/64
IPV6_UNDERLAY_GATEWAY = IPv6Address("2001:db8::1")


def underlay_ipv6(ip: IPv4Address) -> IPv6Address:
    """A lab node's IPv6 underlay address beside its IPv4 one: 192.0.2.11 -> 2001:db8::b."""
    return IPv6Address("2001:db8::") + (int(ip) & 0xFF)
ETCD_IP = IPv4Address("192.0.2.2")
FIRST_HOST_IP = IPv4Address("192.0.2.11")
MAX_HOSTS = 200
MAX_ETCD_MEMBERS = 3  # 192.0.2.2 .. .4: the addresses below the hosts' range
SHIPPED_CONFLIST = Path(__file__).parents[2] / "deploy" / "10-flannel.conflist"
METRICS_PORT = 9464  # each host serves /metrics, /healthz and /readyz on its own 127.0.0.1


@dataclass(frozen=True)
class LabNetwork:
    """A further network on the lab's hosts (``Lab.add_network``): a second agent on each host with
    its own etcd prefix, files, container bridge and metrics port, as a node serving two networks has."""

    name: str  # names the agent's files directory on each host, e.g. "blue"
    prefix: str  # its --etcd-prefix
    config: str  # its network config (JSON), put at <prefix>/config
    bridge: str  # the CNI bridge of its containers (the first network's is cni0)
    metrics_port: int  # on each host's 127.0.0.1, beside METRICS_PORT
    agent_args: tuple[str, ...] = ()  # on top of the lab's, for this network's agents only


@dataclass
class LabHost:
    name: str
    netns: str
    ip: str
    dir: str
    pid: int = 0
    agent_args: list[str] = field(default_factory=list)  # on top of the lab's, e.g. a short lease TTL
    containers: dict[str, str] = field(default_factory=dict)  # name -> IP, attached on this host
    network_pids: dict[str, int] = field(default_factory=dict)  # further networks' agents, by network
    docker: bool = False  # runs a dockerd and the Docker plugin (`lab up --docker`)
    docker_containers: dict[str, str] = field(default_factory=dict)  # name -> IP, on the plugin's network
    ipv6: str = ""  # its IPv6 underlay address, in a lab with IPv6
    containers6: dict[str, str] = field(default_factory=dict)  # name -> IPv6 address, dual-stack

    def files(self, network: str | None = None) -> Path:
        """Where the agent of ``network`` (None: the lab's first network) keeps its files here."""
        return Path(self.dir) if network is None else Path(self.dir) / network

    @property
    def subnet_file(self) -> Path:
        return self.files() / "subnet.env"

    @property
    def log_file(self) -> Path:
        return self.files() / "agent.log"

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

    def agent_pid(self, network: str | None = None) -> int:
        """The pid of ``network``'s agent on this host (0: not running)."""
        return self.pid if network is None else self.network_pids.get(network, 0)

    def set_agent_pid(self, pid: int, network: str | None = None) -> None:
        """Record the pid of ``network``'s agent on this host (0: stopped)."""
        if network is None:
            self.pid = pid
        else:
            self.network_pids[network] = pid

    def subnet_env(self, network: str | None = None) -> dict[str, str]:
        try:
            return parse_keys((self.files(network) / "subnet.env").read_text())
        except OSError:
            return {}

    def flannel_address(self) -> str | None:
        """The host's flannel.1 address (``<subnet>.0``) from its subnet.env, if written."""
        subnet = self.subnet_env().get("FLANNEL_SUBNET")
        return str(IPv4Address(subnet.split("/")[0]) - 1) if subnet else None

    def flannel_ipv6_address(self) -> str | None:
        """The host's flannel-v6.1 address (its IPv6 subnet's network address), if written."""
        subnet = self.subnet_env().get("FLANNEL_IPV6_SUBNET")
        return str(IPv6Address(subnet.split("/")[0]) - 1) if subnet else None
