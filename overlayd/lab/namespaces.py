"""A local multi-host cluster in network namespaces: the demo, and the tests' and benchmarks' testbed.

Layout for a lab named ``P`` (every name starts with ``P`` so parallel or crashed runs never
collide, and ``down`` finds everything even after a crash, from the state file):

- ``P-ul``: the underlay, a bridge ``br0`` holding 192.0.2.1/24 (the hosts' default gateway; it
  has no route onwards, so nothing leaves the lab);
- ``P-etcd``: etcd at 192.0.2.2:2379 (with ``etcd_members=3`` also ``P-etcd2`` and ``P-etcd3`` at
  192.0.2.3 and .4, one cluster; agents get all three endpoints);
- ``P-h1`` .. ``P-hN``: hosts at 192.0.2.11.., each with ``eth0`` on the underlay and an
  ``overlayd run`` agent writing ``subnet.env`` and its state under the lab directory;
- ``P-<name>``: containers (``add_container``), attached on a host by the installed CNI plugin.

Only the namespaces' own interfaces are touched; the root namespace is never changed.
"""

from __future__ import annotations

import contextlib
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
from ipaddress import IPv4Address
from pathlib import Path

from overlayd.lab.etcdserver import EtcdServer, EtcdServerError
from overlayd.ops.install_cni import install_cni
from overlayd.subnet.subnetenv import parse_keys

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/run/overlayd-lab")
DEFAULT_NETWORK_CONFIG = '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}}'
ETCD_PREFIX = "/coreos.com/network"
UNDERLAY_GATEWAY = IPv4Address("192.0.2.1")
ETCD_IP = IPv4Address("192.0.2.2")
FIRST_HOST_IP = IPv4Address("192.0.2.11")
MAX_HOSTS = 200
MAX_ETCD_MEMBERS = 3  # 192.0.2.2 .. .4: the addresses below the hosts' range
SHIPPED_CONFLIST = Path(__file__).parents[2] / "deploy" / "10-flannel.conflist"
METRICS_PORT = 9464  # each host serves /metrics, /healthz and /readyz on its own 127.0.0.1
# GET a URL, print the status line then the body; run inside a host's namespace by http_get.
_HTTP_GET = """
import sys, urllib.error, urllib.request
try:
    response = urllib.request.urlopen(sys.argv[1], timeout=5)
except urllib.error.HTTPError as error:
    response = error
print(response.status)
sys.stdout.write(response.read().decode())
"""


class LabError(RuntimeError):
    """A lab step failed; the message names the step and the command's error output."""


def sh(*args: str, netns: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run a command (inside ``netns`` when given); raise LabError with its stderr on failure."""
    command = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


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

    def subnet_env(self) -> dict[str, str]:
        try:
            return parse_keys(self.subnet_file.read_text())
        except OSError:
            return {}

    def flannel_address(self) -> str | None:
        """The host's flannel.1 address (``<subnet>.0``) from its subnet.env, if written."""
        subnet = self.subnet_env().get("FLANNEL_SUBNET")
        return str(IPv4Address(subnet.split("/")[0]) - 1) if subnet else None


@dataclass
class Lab:
    """A lab's layout and processes; persisted as JSON so another process can tear it down."""

    name: str
    root: str
    hosts: list[LabHost] = field(default_factory=list)
    etcd_pids: list[int] = field(default_factory=list)
    agent_args: list[str] = field(default_factory=list)
    etcd_members: int = 1

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
                _stop_pid(pid, sig, 10.0)
                self.etcd_pids[i] = 0
        self.save()

    def _make_underlay(self) -> None:
        sh("ip", "netns", "add", self.underlay_ns)
        ul = self.underlay_ns
        sh("ip", "link", "add", "br0", "type", "bridge", netns=ul)
        sh("ip", "addr", "add", f"{UNDERLAY_GATEWAY}/24", "dev", "br0", netns=ul)
        sh("ip", "link", "set", "br0", "up", netns=ul)
        sh("ip", "link", "set", "lo", "up", netns=ul)

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
        )
        self.hosts.append(host)
        self.save()
        self._make_node(host.netns, name, IPv4Address(host.ip))
        # Containers behind the agent's bridge need forwarding, as on any flannel node.
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=host.netns)
        Path(host.dir).mkdir(parents=True, exist_ok=True)
        if start_agent:
            self.start_agent(host)
        return host

    def agent_command(self, host: LabHost) -> list[str]:
        return [
            sys.executable, "-m", "overlayd", "run",
            f"--etcd-endpoints={self.etcd_endpoint}",
            f"--subnet-file={host.subnet_file}",
            f"--state-dir={Path(host.dir) / 'state'}",
            f"--metrics-address=127.0.0.1:{METRICS_PORT}",
            *self.agent_args,
            *host.agent_args,
        ]  # fmt: skip

    def start_agent(self, host: LabHost) -> None:
        """Start ``overlayd run`` in the host's namespace, detached, logging to its agent.log."""
        with host.log_file.open("ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *self.agent_command(host)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        host.pid = process.pid
        self.save()

    def stop_agent(self, host: LabHost, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the host's agent; SIGKILL if it does not exit within ``timeout``."""
        if host.pid:
            _stop_pid(host.pid, sig, timeout)
        host.pid = 0
        self.save()

    # ---- containers ----------------------------------------------------------------------------

    def container_ns(self, name: str) -> str:
        return f"{self.name}-{name}"

    def add_container(self, host: LabHost, name: str) -> str:
        """Create container namespace ``<lab>-<name>``, attach it on ``host`` with the installed CNI
        plugin (flannel + portmap, as deploy/10-flannel.conflist), and return its IP address."""
        netns = self.container_ns(name)
        sh("ip", "netns", "add", netns)
        result = json.loads(self.cni(host, "add", netns))
        address = str(result["ips"][0]["address"].split("/")[0])
        host.containers[name] = address
        self.save()
        return address

    def add_containers(self, per_host: int) -> None:
        """Attach ``per_host`` containers on every host, named ``<host>c<k>`` (h1c1, h1c2, ...)."""
        for host in self.hosts:
            for k in range(1, per_host + 1):
                self.add_container(host, f"{host.name}c{k}")

    def del_container(self, host: LabHost, name: str) -> None:
        """CNI DEL the container on ``host`` (releasing its IP), then delete its namespace."""
        netns = self.container_ns(name)
        self.cni(host, "del", netns)
        sh("ip", "netns", "del", netns)
        host.containers.pop(name, None)
        self.save()

    def cni(self, host: LabHost, command: str, container_ns: str) -> str:
        """`overlayd cni <command>` in the host's namespace, as a runtime on that host would; stdout."""
        bin_dir = self.dir / "cni-bin"
        if not (bin_dir / "flannel").exists():
            install_cni(bin_dir)
        env = {
            **os.environ,
            "CNI_PATH": f"{bin_dir}:/usr/lib/cni",
            "CNI_CACHE_DIR": str(Path(host.dir) / "cni-cache"),
        }
        argv = [sys.executable, "-m", "overlayd", "cni", command, container_ns]
        argv += ["--conflist", str(self._conflist(host))]
        done = subprocess.run(
            ["ip", "netns", "exec", host.netns, *argv], capture_output=True, text=True, env=env, check=False
        )
        if done.returncode != 0:
            raise LabError(f"overlayd cni {command} {container_ns} on {host.name}: {done.stderr.strip()}")
        return done.stdout

    def _conflist(self, host: LabHost) -> Path:
        """The shipped conflist with this host's subnet.env and CNI state kept under its lab dir."""
        shipped = json.loads(SHIPPED_CONFLIST.read_text())
        flannel = shipped["plugins"][0]
        flannel["subnetFile"] = str(host.subnet_file)
        flannel["dataDir"] = str(Path(host.dir) / "cni-state")
        flannel["ipam"] = {"dataDir": str(Path(host.dir) / "ipam")}
        path = Path(host.dir) / "net.conflist"
        path.write_text(json.dumps(shipped))
        return path

    # ---- inspecting --------------------------------------------------------------------------

    @staticmethod
    def http_get(host: LabHost, path: str) -> tuple[int, str]:
        """GET ``path`` (``/metrics``, ``/readyz``...) from the host's agent, inside its namespace."""
        url = f"http://127.0.0.1:{METRICS_PORT}{path}"
        status, _, body = sh(sys.executable, "-c", _HTTP_GET, url, netns=host.netns).partition("\n")
        return int(status), body

    @staticmethod
    def metric(host: LabHost, name: str, **labels: str) -> float:
        """The sum of the host agent's ``name`` samples whose labels include ``labels`` (0 if none)."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = Lab.http_get(host, "/metrics")
        if status != 200:
            raise LabError(f"{host.name}: /metrics answered {status}: {text.strip()}")
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def wait_converged(self, timeout: float = 60.0) -> None:
        """Wait until every running agent has written subnet.env and routes to every other host."""
        deadline = time.monotonic() + timeout
        missing: list[str] = []
        while time.monotonic() < deadline:
            missing = self.unconverged()
            if not missing:
                return
            time.sleep(0.2)
        raise LabError(f"lab {self.name} not converged after {timeout:.0f}s: " + "; ".join(missing))

    def unconverged(self) -> list[str]:
        """What is still missing: hosts without subnet.env, or without a route to some peer."""
        running = [host for host in self.hosts if host.pid]
        subnets = {host.name: host.subnet_env().get("FLANNEL_SUBNET") for host in running}
        missing = [f"{name} has no subnet.env" for name, subnet in subnets.items() if not subnet]
        if missing:
            return missing
        for host in running:
            routes = sh("ip", "-4", "route", "show", "dev", "flannel.1", netns=host.netns, check=False)
            for peer in running:
                if peer is host:
                    continue
                peer_net = str(IPv4Address(subnets[peer.name].split("/")[0]) - 1)
                if f"{peer_net}/" not in routes:
                    missing.append(f"{host.name} lacks a route to {peer.name}")
        return missing

    def ping(self, source: LabHost, target: str, count: int = 1, wait: float = 1.0) -> bool:
        done = subprocess.run(_ping_argv(source.netns, target, count, wait), capture_output=True, check=False)
        return done.returncode == 0

    def ping_table(self) -> tuple[str, bool]:
        """All-pairs ping of the hosts' flannel.1 addresses, as text; and whether all passed."""
        endpoints = [(h.name, h.netns, h.flannel_address() or "") for h in self.hosts]
        table, ok = _ping_table(endpoints)
        legend = ", ".join(f"{h.name}={h.ip} flannel.1 {address or None}"
                           for h, (_, _, address) in zip(self.hosts, endpoints, strict=True))  # fmt: skip
        return f"{table}\n\n{legend}", ok

    def container_ping_table(self) -> tuple[str, bool]:
        """All-pairs ping between the lab's containers (same host and across hosts); "" if none."""
        endpoints = [
            (name, self.container_ns(name), address)
            for host in self.hosts
            for name, address in host.containers.items()
        ]
        if not endpoints:
            return "", True
        table, ok = _ping_table(endpoints)
        legend = ", ".join(f"{name}={address} on {host.name}" for host in self.hosts
                           for name, address in host.containers.items())
        return f"{table}\n\n{legend}", ok

    def running_pids(self) -> set[int]:
        """Every process inside the lab's namespaces: its agents and etcd, and anything else.

        A recorded pid is signalled only when it is among these: after a crash it may have been
        reused by an unrelated process, which the namespace tells apart.
        """
        return {pid for netns in lab_namespaces(self.name) for pid in _namespace_pids(netns)}

    def status(self) -> str:
        running = self.running_pids()
        members = ", ".join(_alive(pid, running) for pid in self.etcd_pids) or "stopped"
        where = ", ".join(self.etcd_member_ns(i) for i in range(self.etcd_members))
        lines = [f"lab {self.name}: etcd {self.etcd_endpoint} in {where} ({members})"]
        for host in self.hosts:
            subnet = host.subnet_env().get("FLANNEL_SUBNET", "-")
            lines.append(
                f"  {host.name:<4} {host.netns:<16} {host.ip:<12} subnet {subnet:<18} "
                f"agent {_alive(host.pid, running)}  log {host.log_file}"
            )
            for name, address in host.containers.items():
                lines.append(f"       container {self.container_ns(name):<16} {address}")
        return "\n".join(lines)

    # ---- tearing down ------------------------------------------------------------------------

    def down(self) -> None:
        """Stop agents and etcd, delete every namespace of the lab and its directory."""
        running = self.running_pids()
        for pid in (*(host.pid for host in self.hosts), *self.etcd_pids):  # agents first, then etcd
            if pid in running:
                _stop_pid(pid, signal.SIGTERM, 5.0)
        for netns in lab_namespaces(self.name):
            _kill_namespace_processes(netns)
            sh("ip", "netns", "del", netns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def random_lab_name() -> str:
    """A fresh lab prefix for tests and benchmarks (short: device names are 15 chars at most)."""
    return "ov" + secrets.token_hex(2)


def lab_namespaces(name: str) -> list[str]:
    """Namespaces belonging to lab ``name`` (by prefix), including ones a crash left behind."""
    out = sh("ip", "netns", "list", check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [ns for ns in names if ns.startswith(f"{name}-")]


def _alive(pid: int, running: set[int]) -> str:
    if not pid:
        return "stopped"
    return f"pid {pid}" if pid in running else f"pid {pid} gone"


def _stop_pid(pid: int, sig: int, timeout: float) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return
        except ChildProcessError:
            pass  # not our child: poll for its disappearance instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _namespace_pids(netns: str) -> set[int]:
    out = sh("ip", "netns", "pids", netns, check=False)
    return {int(p) for p in out.split() if p.isdigit()}


def _kill_namespace_processes(netns: str) -> None:
    """Kill whatever still runs in netns (a crashed run's agents), so deletion frees it."""
    for pid in _namespace_pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ping_table(endpoints: list[tuple[str, str, str]]) -> tuple[str, bool]:
    """Ping every (name, netns, address) endpoint from every other, all at once; a text table
    ("ok"/"FAIL" per pair, sources down, targets across) and whether every pair answered."""
    probes = {
        (source, target): subprocess.Popen(_ping_argv(source_ns, address, count=3, wait=1.0),
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for source, source_ns, _ in endpoints
        for target, _, address in endpoints
        if source != target and address
    }
    answered = {pair: probe.wait() == 0 for pair, probe in probes.items()}
    names = [name for name, _, _ in endpoints]
    width = max(8, *(len(n) for n in names)) + 2
    lines = ["from \\ to".ljust(14) + "".join(n.ljust(width) for n in names)]
    for source in names:
        cells = ["-" if source == t else "ok" if answered.get((source, t)) else "FAIL" for t in names]
        lines.append(f"{source} ".ljust(14) + "".join(c.ljust(width) for c in cells))
    return "\n".join(lines), all(answered.values()) and len(answered) == len(names) * (len(names) - 1)


def _ping_argv(netns: str, address: str, count: int, wait: float) -> list[str]:
    """``ping`` of ``address`` from inside ``netns``: quiet, numeric, probes 0.2 s apart."""
    return ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2",
            "-W", str(wait), address]  # fmt: skip
