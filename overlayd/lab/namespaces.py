"""A local multi-host cluster in network namespaces: the demo, and the tests' and benchmarks' testbed.

Layout for a lab named ``P`` (every name starts with ``P`` so parallel or crashed runs never
collide, and ``down`` finds everything even after a crash, from the state file):

- ``P-ul``: the underlay, a bridge ``br0`` holding 192.0.2.1/24 (the hosts' default gateway; it
  has no route onwards, so nothing leaves the lab);
- ``P-etcd``: etcd at 192.0.2.2:2379 (with ``etcd_members=3`` also ``P-etcd2`` and ``P-etcd3`` at
  192.0.2.3 and .4, one cluster; agents get all three endpoints);
- ``P-h1`` .. ``P-hN``: hosts at 192.0.2.11.., each with ``eth0`` on the underlay and an
  ``overlayd run`` agent writing ``subnet.env`` and its state under the lab directory;
- ``P-<name>``: containers (``add_container``), attached on a host by the installed CNI plugin;
- further networks (``add_network``): a second agent per host, its files under ``<host dir>/<network>``.
- with ``--docker``, a dockerd and the Docker plugin per host, and Docker containers
  (``dockerhosts.py``).

Only the namespaces' own interfaces are touched; the root namespace is never changed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, ip_address
from pathlib import Path

from overlayd.lab import checks
from overlayd.lab.convergence import missing_routes
from overlayd.lab.dockerhosts import destroy_docker_hosts, docker_endpoints
from overlayd.lab.etcdserver import EtcdServer, EtcdServerError
from overlayd.lab.hosts import (
    DEFAULT_NETWORK_CONFIG,
    DEFAULT_ROOT,
    ETCD_IP,
    ETCD_PREFIX,
    FIRST_HOST_IP,
    IPV6_UNDERLAY_GATEWAY,
    IPV6_UNDERLAY_PREFIX,
    MAX_ETCD_MEMBERS,
    MAX_HOSTS,
    METRICS_PORT,
    SHIPPED_CONFLIST,
    UNDERLAY_GATEWAY,
    LabHost,
    LabNetwork,
    underlay_ipv6,
)
from overlayd.lab.shell import (
    LabError,
    kill_namespace_processes,
    lab_namespaces,
    namespace_pids,
    pid_state,
    sh,
    stop_pid,
)
from overlayd.ops.install_cni import install_cni

log = logging.getLogger(__name__)


@dataclass
class Lab:
    """A lab's layout and processes; persisted as JSON so another process can tear it down."""

    name: str
    root: str
    hosts: list[LabHost] = field(default_factory=list)
    etcd_pids: list[int] = field(default_factory=list)
    agent_args: list[str] = field(default_factory=list)
    etcd_members: int = 1
    networks: list[LabNetwork] = field(default_factory=list)  # beyond the first (add_network)
    network_config: str = ""  # what ``up`` put in etcd ("": none, or the default)
    ipv6: bool = False  # the underlay has IPv6 too (2001:db8::/64): for dual-stack networks

    # ---- naming and persistence -------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.name

    @property
    def underlay_ns(self) -> str:
        return f"{self.name}-ul"

    @property
    def etcd_ns(self) -> str:
        return self.etcd_member_ns(0)

    def etcd_member_ns(self, index: int) -> str:
        return f"{self.name}-etcd{index + 1 if index else ''}"

    @property
    def etcd_endpoint(self) -> str:
        """Every member's client URL, comma-separated (the agents' --etcd-endpoints)."""
        return ",".join(f"http://{ETCD_IP + i}:2379" for i in range(self.etcd_members))

    def etcd(self, index: int = 0) -> EtcdServer:
        """Member ``index`` of the lab's etcd (0: the only one, unless ``etcd_members`` > 1)."""
        names = [self.etcd_member_ns(i) for i in range(self.etcd_members)]
        cluster = ",".join(f"{name}=http://{ETCD_IP + i}:2380" for i, name in enumerate(names))
        return EtcdServer(
            self.dir / names[index].removeprefix(f"{self.name}-"),
            host=str(ETCD_IP + index),
            netns=names[index],
            name=names[index],
            initial_cluster=cluster,
        )

    def etcd_leader(self, timeout: float = 20.0) -> int:
        """The index of the member that leads the cluster (waiting out an election); LabError if none."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, pid in enumerate(self.etcd_pids):
                if not pid:
                    continue
                try:
                    status = json.loads(self.etcd(index).etcdctl("endpoint", "status", "--write-out=json"))
                except (EtcdServerError, ValueError):
                    continue
                # etcdctl's JSON omits zero fields: no "leader" key means an election is under way.
                fields = status[0]["Status"]
                if fields.get("leader") and fields["leader"] == fields["header"].get("member_id"):
                    return index
            time.sleep(0.2)
        raise LabError(f"lab {self.name}: no etcd member reports being the leader after {timeout:.0f}s")

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "lab.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, name: str, root: Path = DEFAULT_ROOT) -> Lab | None:
        try:
            data = json.loads((root / name / "lab.json").read_text())
        except OSError:
            return None
        data["hosts"] = [LabHost(**host) for host in data["hosts"]]
        data["networks"] = [LabNetwork(**network) for network in data.get("networks", [])]
        return cls(**data)

    # ---- building ----------------------------------------------------------------------------

    def up(
        self, hosts: int, network_config: str | None = DEFAULT_NETWORK_CONFIG, start_agents: bool = True
    ) -> None:
        """Build underlay, etcd and ``hosts`` hosts (agents started unless told not to).

        ``network_config`` None leaves ``<prefix>/config`` unset, to test agents waiting for it.
        """
        if not 1 <= hosts <= MAX_HOSTS:
            raise LabError(f"--hosts {hosts}: use between 1 and {MAX_HOSTS}")
        if not 1 <= self.etcd_members <= MAX_ETCD_MEMBERS:
            raise LabError(f"etcd_members {self.etcd_members}: use between 1 and {MAX_ETCD_MEMBERS}")
        self.network_config = network_config or ""
        self.save()
        try:
            self._make_underlay()
            for index in range(self.etcd_members):
                netns = self.etcd_member_ns(index)
                self._make_node(netns, netns.removeprefix(f"{self.name}-"), ETCD_IP + index)
            server = self.start_etcd()
            if network_config is not None:
                server.etcdctl("put", f"{ETCD_PREFIX}/config", network_config)
            for _ in range(hosts):
                self.add_host(start_agent=start_agents)
        except BaseException:
            self.down()
            raise

    def start_etcd(self, index: int | None = None) -> EtcdServer:
        """Start (or restart, keeping its data) member ``index`` or all; pids are saved for ``down``.

        Returns the first member started. All are launched before waiting, because a cluster
        member answers health checks only once a quorum runs.
        """
        indexes = range(self.etcd_members) if index is None else [index]
        servers = [self.etcd(i) for i in indexes]
        self.etcd_pids += [0] * (self.etcd_members - len(self.etcd_pids))
        for i, server in zip(indexes, servers, strict=True):
            server.launch()
            self.etcd_pids[i] = server.pid
        self.save()
        for server in servers:
            server.wait_healthy()
        return servers[0]

    def stop_etcd(self, index: int | None = None, sig: int = signal.SIGTERM) -> None:
        """Stop member ``index`` or all, e.g. to test that agents and the data path ride out an outage."""
        for i, pid in enumerate(self.etcd_pids):
            if pid and index in (None, i):
                stop_pid(pid, sig, 10.0)
                self.etcd_pids[i] = 0
        self.save()

    def _make_underlay(self) -> None:
        sh("ip", "netns", "add", self.underlay_ns)
        ul = self.underlay_ns
        sh("ip", "link", "add", "br0", "type", "bridge", netns=ul)
        sh("ip", "addr", "add", f"{UNDERLAY_GATEWAY}/24", "dev", "br0", netns=ul)
        sh("ip", "link", "set", "br0", "up", netns=ul)
        sh("ip", "link", "set", "lo", "up", netns=ul)
        if self.ipv6:  # no DAD: the lab's addresses are unique by construction
            sh("ip", "-6", "addr", "add", f"{IPV6_UNDERLAY_GATEWAY}/{IPV6_UNDERLAY_PREFIX}", "dev", "br0",
               "nodad", netns=ul)  # fmt: skip

    def _make_node(self, netns: str, port_name: str, ip: IPv4Address) -> None:
        """A namespace whose eth0 is plugged into the underlay bridge, default route via it."""
        sh("ip", "netns", "add", netns)
        ul = self.underlay_ns
        sh("ip", "link", "add", port_name, "type", "veth", "peer", "name", "eth0", "netns", netns, netns=ul)
        sh("ip", "link", "set", port_name, "master", "br0", "up", netns=ul)
        sh("ip", "link", "set", "lo", "up", netns=netns)
        sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", netns=netns)
        sh("ip", "link", "set", "eth0", "up", netns=netns)
        sh("ip", "route", "add", "default", "via", str(UNDERLAY_GATEWAY), netns=netns)
        if self.ipv6:
            address = f"{underlay_ipv6(ip)}/{IPV6_UNDERLAY_PREFIX}"
            sh("ip", "-6", "addr", "add", address, "dev", "eth0", "nodad", netns=netns)
            sh("ip", "-6", "route", "add", "default", "via", str(IPV6_UNDERLAY_GATEWAY), netns=netns)

    def add_host(self, start_agent: bool = True, agent_args: list[str] | None = None) -> LabHost:
        """Add one more host (h<N+1>) and, unless told not to, start its agent.

        ``agent_args`` are added to the lab's agent options for this host only.
        """
        index = len(self.hosts) + 1
        name = f"h{index}"
        host = LabHost(
            name=name,
            netns=f"{self.name}-{name}",
            ip=str(FIRST_HOST_IP + index - 1),
            dir=str(self.dir / name),
            agent_args=list(agent_args or []),
            ipv6=str(underlay_ipv6(FIRST_HOST_IP + index - 1)) if self.ipv6 else "",
        )
        self.hosts.append(host)
        self.save()
        self._make_node(host.netns, name, IPv4Address(host.ip))
        # Containers behind the agent's bridge need forwarding, as on any flannel node.
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=host.netns)
        if self.ipv6:
            sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", netns=host.netns)
        Path(host.dir).mkdir(parents=True, exist_ok=True)
        if start_agent:
            self.start_agent(host)
        return host

    def add_network(self, network: LabNetwork) -> None:
        """Serve a further network: its config under its own prefix in the lab's etcd, its agent beside
        the first network's on each host (on a host added later: ``start_agent(host, network.name)``)."""
        self.networks.append(network)
        self.save()
        self.etcd().etcdctl("put", f"{network.prefix}/config", network.config)
        for host in self.hosts:
            self.start_agent(host, network.name)

    def network(self, name: str) -> LabNetwork:
        """The further network ``name``; LabError if the lab has none of that name."""
        if found := [network for network in self.networks if network.name == name]:
            return found[0]
        raise LabError(f"lab {self.name} has no network {name!r}; add it with add_network")

    def agent_command(self, host: LabHost, network: str | None = None) -> list[str]:
        """``overlayd run`` for ``network``'s agent on ``host`` (None: the lab's first network)."""
        files = host.files(network)
        extra = self.network(network) if network else None
        return [
            sys.executable, "-m", "overlayd", "run",
            f"--etcd-endpoints={self.etcd_endpoint}",
            f"--subnet-file={files / 'subnet.env'}",
            f"--state-dir={files / 'state'}",
            f"--metrics-address=127.0.0.1:{extra.metrics_port if extra else METRICS_PORT}",
            *([f"--etcd-prefix={extra.prefix}"] if extra else []),
            *self.agent_args,
            *(extra.agent_args if extra else ()),
            *host.agent_args,
        ]  # fmt: skip

    def start_agent(self, host: LabHost, network: str | None = None) -> None:
        """Start ``network``'s (None: the first's) agent in the host's namespace, detached, logging."""
        files, command = host.files(network), self.agent_command(host, network)
        files.mkdir(parents=True, exist_ok=True)
        with (files / "agent.log").open("ab") as out:
            process = subprocess.Popen(host.command(command),
                                       stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)  # fmt: skip
        host.set_agent_pid(process.pid, network)
        self.save()

    def stop_agent(
        self, host: LabHost, sig: int = signal.SIGTERM, timeout: float = 10.0, network: str | None = None
    ) -> None:
        """Stop ``network``'s agent on the host (None: the first's); SIGKILL after ``timeout``."""
        if pid := host.agent_pid(network):
            stop_pid(pid, sig, timeout)
        host.set_agent_pid(0, network)
        self.save()

    # ---- containers ----------------------------------------------------------------------------

    def container_ns(self, name: str) -> str:
        return f"{self.name}-{name}"

    def add_container(self, host: LabHost, name: str, network: str | None = None) -> str:
        """Create container namespace ``<lab>-<name>``, attach it on ``host`` to ``network`` (None: the
        first) with the CNI plugin (flannel + portmap, as deploy/10-flannel.conflist); its IP address."""
        netns = self.container_ns(name)
        sh("ip", "netns", "add", netns)
        result = json.loads(self.cni(host, "add", netns, network))
        addresses = [str(ip["address"].split("/")[0]) for ip in result["ips"]]
        ipv6 = next((a for a in addresses if ":" in a), None)
        # An IPv6-only network's container has no IPv4 address: its IPv6 one is its address.
        address = next((a for a in addresses if ":" not in a), None) or ipv6
        if address is None:
            raise LabError(f"{name}: the CNI plugin gave no address: {result}")
        if address != ipv6:
            host.containers[name] = address
        if ipv6:
            host.containers6[name] = ipv6  # a dual-stack network's container has both
            # Usable once duplicate address detection is over (a second): the container's and the bridge's.
            checks.wait_untentative(netns, host.netns)
        self.save()
        return address

    def add_containers(self, per_host: int) -> None:
        """Attach ``per_host`` containers on every host, named ``<host>c<k>`` (h1c1, h1c2, ...)."""
        for host in self.hosts:
            for k in range(1, per_host + 1):
                self.add_container(host, f"{host.name}c{k}")

    def del_container(self, host: LabHost, name: str, network: str | None = None) -> None:
        """CNI DEL the container on ``host`` (releasing its IP), then delete its namespace."""
        netns = self.container_ns(name)
        self.cni(host, "del", netns, network)
        sh("ip", "netns", "del", netns)
        host.containers.pop(name, None)
        host.containers6.pop(name, None)
        self.save()

    def cni(self, host: LabHost, command: str, container_ns: str, network: str | None = None) -> str:
        """`overlayd cni <command>` in the host's namespace with ``network``'s conflist; stdout."""
        bin_dir = self.dir / "cni-bin"
        if not (bin_dir / "flannel").exists():
            install_cni(bin_dir)
        env = {
            **os.environ,
            "CNI_PATH": f"{bin_dir}:/usr/lib/cni",
            "CNI_CACHE_DIR": str(host.files(network) / "cni-cache"),
        }
        argv = [sys.executable, "-m", "overlayd", "cni", command, container_ns]
        argv += ["--conflist", str(self.cni_conflist(host, network))]
        done = subprocess.run(
            ["ip", "netns", "exec", host.netns, *argv], capture_output=True, text=True, env=env, check=False
        )
        if done.returncode != 0:
            raise LabError(f"overlayd cni {command} {container_ns} on {host.name}: {done.stderr.strip()}")
        return done.stdout

    def cni_conflist(self, host: LabHost, network: str | None = None) -> Path:
        """The shipped conflist with ``network``'s subnet.env, CNI state (and bridge) on this host."""
        files = host.files(network)
        shipped = json.loads(SHIPPED_CONFLIST.read_text())
        flannel = shipped["plugins"][0]
        flannel["subnetFile"] = str(files / "subnet.env")
        flannel["dataDir"] = str(files / "cni-state")
        flannel["ipam"] = {"dataDir": str(files / "ipam")}
        if network is not None:
            shipped["name"] = f"{shipped['name']}-{network}"
            flannel["delegate"] = {**flannel.get("delegate", {}), "bridge": self.network(network).bridge}
        path = files / "net.conflist"
        path.write_text(json.dumps(shipped))
        return path

    # ---- inspecting --------------------------------------------------------------------------

    @staticmethod
    def http_get(host: LabHost, path: str) -> tuple[int, str]:
        """GET ``path`` (``/metrics``, ``/readyz``...) from the host's agent, inside its namespace."""
        return checks.http_get(host, path)

    @staticmethod
    def metric(host: LabHost, name: str, **labels: str) -> float:
        """The sum of the host agent's ``name`` samples whose labels include ``labels`` (0 if none)."""
        return checks.metric(host, name, **labels)

    def wait_converged(self, timeout: float = 60.0, network: str | None = None) -> None:
        """Wait until every running agent of ``network`` (None: the first) routes to every other host."""
        deadline = time.monotonic() + timeout
        missing: list[str] = []
        while time.monotonic() < deadline:
            missing = self.unconverged(network)
            if not missing:
                return
            time.sleep(0.2)
        raise LabError(f"lab {self.name} not converged after {timeout:.0f}s: " + "; ".join(missing))

    def unconverged(self, network: str | None = None) -> list[str]:
        """What ``network`` (None: the first) still lacks before it is converged (``missing_routes``)."""
        config = self.network(network).config if network else self.network_config
        return missing_routes(self.hosts, config, network)

    def ping(self, source: LabHost, target: str, count: int = 1, wait: float = 1.0) -> bool:
        argv = checks.ping_argv(source.netns, target, count, wait)
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def ping_table(self) -> tuple[str, bool]:
        """All-pairs ping of the hosts' overlay addresses (IPv6 too), as text; and whether all passed."""
        named = [(h, *self.overlay_address(h)) for h in self.hosts]
        endpoints = [(h.name, h.netns, address) for h, _, address in named]
        legend = ", ".join(f"{h.name}={h.ip} {device} {address or None}" for h, device, address in named)
        endpoints6 = [(h.name, h.netns, self.overlay_address(h, ipv6=True)[1]) for h in self.hosts]
        return checks.family_tables(endpoints, legend, endpoints6, "IPv6")

    @staticmethod
    def overlay_address(host: LabHost, ipv6: bool = False) -> tuple[str, str]:
        """(device, address) of the host's own overlay address (``ipv6``: its IPv6 half's): the
        backend's device's ``<subnet>.0`` where it has one (flannel.1, flannel-v6.1), else the
        bridge's ``<subnet>.1`` (host-gw has no device; the bridge comes with the first container)."""
        address = host.flannel_ipv6_address() if ipv6 else host.flannel_address()
        if not address:
            return "", ""
        held = json.loads(sh("ip", "-j", "-6" if ipv6 else "-4", "addr", "show", netns=host.netns) or "[]")
        for link in held:
            for info in link.get("addr_info", []):
                if info.get("local") == address:
                    return link["ifname"], address
        return "cni0", str(ip_address(address) + 1)

    def container_ping_table(self) -> tuple[str, bool]:
        """All-pairs ping between the lab's containers (same host and across hosts); "" if none."""
        endpoints = [
            (name, self.container_ns(name), address)
            for host in self.hosts
            for name, address in host.containers.items()
        ] + docker_endpoints(self.hosts)
        endpoints6 = [(name, self.container_ns(name), address) for host in self.hosts
                      for name, address in host.containers6.items()]  # fmt: skip
        if not endpoints and not endpoints6:
            return "", True
        legend = ", ".join(f"{name}={address} on {host.name}" for host in self.hosts
                           for name, address in (*host.containers.items(), *host.docker_containers.items()))
        return checks.family_tables(endpoints, legend, endpoints6, "IPv6")

    def running_pids(self) -> set[int]:
        """Every process inside the lab's namespaces: its agents and etcd, and anything else.

        A recorded pid is signalled only when it is among these: after a crash it may have been
        reused by an unrelated process, which the namespace tells apart.
        """
        return {pid for netns in lab_namespaces(self.name) for pid in namespace_pids(netns)}

    def status(self) -> str:
        running = self.running_pids()
        members = ", ".join(pid_state(pid, running) for pid in self.etcd_pids) or "stopped"
        where = ", ".join(self.etcd_member_ns(i) for i in range(self.etcd_members))
        lines = [f"lab {self.name}: etcd {self.etcd_endpoint} in {where} ({members})"]
        for host in self.hosts:
            subnet = host.subnet_env().get("FLANNEL_SUBNET", "-")
            lines.append(
                f"  {host.name:<4} {host.netns:<16} {host.ip:<12} subnet {subnet:<18} "
                f"agent {pid_state(host.pid, running)}  log {host.log_file}"
            )
            if subnet6 := host.subnet_env().get("FLANNEL_IPV6_SUBNET"):
                lines.append(f"       {host.ipv6:<28} IPv6 subnet {subnet6}")
            for name, address in host.containers.items():
                also = f" {host.containers6[name]}" if name in host.containers6 else ""
                lines.append(f"       container {self.container_ns(name):<16} {address}{also}")
            for name, address in host.docker_containers.items():
                lines.append(f"       docker container {name:<9} {address}  (network overlayd)")
        return "\n".join(lines)

    # ---- tearing down ------------------------------------------------------------------------

    def down(self) -> None:
        """Stop agents and etcd, delete every namespace of the lab and its directory."""
        destroy_docker_hosts(self.hosts)  # before the namespaces: containers live outside them
        running = self.running_pids()
        agents = [pid for host in self.hosts for pid in (host.pid, *host.network_pids.values())]
        for pid in (*agents, *self.etcd_pids):  # agents first, then etcd
            if pid in running:
                stop_pid(pid, signal.SIGTERM, 5.0)
        for netns in lab_namespaces(self.name):
            kill_namespace_processes(netns)
            sh("ip", "netns", "del", netns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def random_lab_name() -> str:
    """A fresh lab prefix for tests and benchmarks (short: device names are 15 chars at most)."""
    return "ov" + secrets.token_hex(2)
