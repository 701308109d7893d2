"""Fixtures for the CNI shim tests: the installed plugin, a fake subnet.env, namespaces.

Black-box tests run the installed ``flannel`` executable as a runtime would: a subprocess with
the CNI_* environment and the config on stdin. Root tests run it inside a per-test "host"
namespace (``ip netns exec``), because the bridge plugin creates the bridge, the host end of the
veth and its iptables rules in the namespace it runs in; the root namespace is never touched.
Namespaces are named ``ovc<4 hex per run>h<n>``/``c<n>`` and deleted however the test ends.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from overlayd.ops.install_cni import install_cni

REFERENCE_PLUGINS = Path("/usr/lib/cni")
RUN_PREFIX = f"ovc{secrets.token_hex(2)}"
_names = itertools.count()

# Only documentation/benchmark addresses (RFC 2544 / RFC 3849).
SUBNET_ENV = {
    "FLANNEL_NETWORK": "198.18.0.0/16",
    "FLANNEL_SUBNET": "198.18.5.1/24",
    "FLANNEL_MTU": "1450",
    "FLANNEL_IPMASQ": "true",
}
DUAL_STACK = {
    **SUBNET_ENV,
    "FLANNEL_IPV6_NETWORK": "2001:db8::/48",
    "FLANNEL_IPV6_SUBNET": "2001:db8:0:5::1/64",
}


@pytest.fixture(autouse=True)
def _skip_root_tests(request: pytest.FixtureRequest) -> None:
    if not request.node.get_closest_marker("root"):
        return
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces (run with sudo)")
    if not (REFERENCE_PLUGINS / "bridge").exists():
        pytest.skip(
            "needs the reference CNI plugins in /usr/lib/cni (apt install containernetworking-plugins)"
        )


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNI bin dir holding the shim installed by ``overlayd install-cni``."""
    bin_dir = tmp_path_factory.mktemp("cni-bin")
    install_cni(bin_dir)
    return bin_dir


@dataclass
class Reply:
    """What the runtime sees from one plugin call."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def error(self, code: int) -> dict[str, Any]:
        """The error JSON, after checking it is an error with ``code``."""
        assert self.returncode != 0, self.stdout
        error = self.json
        assert error["code"] == code, error
        return error


def run_netns(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


@dataclass
class Node:
    """A fake host: subnet.env and state dirs under ``tmp``, optionally a host namespace."""

    tmp: Path
    plugin_dir: Path
    host_ns: str | None = None
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bridge = f"{RUN_PREFIX}br{next(_names)}"
        self.subnet_file = self.tmp / "run" / "subnet.env"
        self.data_dir = self.tmp / "flannel-state"
        self.ipam_dir = self.tmp / "ipam"
        self.write_subnet_env(SUBNET_ENV)

    def write_subnet_env(self, values: dict[str, str]) -> None:
        self.subnet_file.parent.mkdir(parents=True, exist_ok=True)
        self.subnet_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    def conf(self, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
        """A flannel conflist entry as the runtime sends it, pointing into ``tmp``."""
        conf: dict[str, Any] = {
            "cniVersion": version,
            "name": "ovctest",
            "type": "flannel",
            "subnetFile": str(self.subnet_file),
            "dataDir": str(self.data_dir),
            "subnetFileTimeout": 0.3,
            "delegate": {"bridge": self.bridge},
            "ipam": {"dataDir": str(self.ipam_dir)},
        }
        conf.update(extra)
        return conf

    def netns(self) -> str:
        """A new container namespace, deleted with the node."""
        name = f"{RUN_PREFIX}c{next(_names)}"
        run_netns(["ip", "netns", "add", name])
        self.namespaces.append(name)
        return name

    def call(
        self,
        command: str,
        conf: dict[str, Any] | str,
        netns: str | None = None,
        container_id: str = "ctr1",
        ifname: str = "eth0",
        **env_overrides: str | None,
    ) -> Reply:
        """Run the installed shim once (in the host namespace, when there is one)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": f"/var/run/netns/{netns}" if netns else "",
            "CNI_IFNAME": ifname,
            "CNI_PATH": f"{self.plugin_dir}:{self._delegates_dir()}",
        }
        env.update(env_overrides)
        env = {key: value for key, value in env.items() if value is not None}
        prefix = ["ip", "netns", "exec", self.host_ns] if self.host_ns else []
        stdin = conf if isinstance(conf, str) else json.dumps(conf)
        completed = subprocess.run(
            [*prefix, str(self.plugin_dir / "flannel")],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return Reply(completed.returncode, completed.stdout, completed.stderr)

    def _delegates_dir(self) -> Path:
        """The reference plugins inside a host namespace; outside one, stand-ins that fail.

        Without a host namespace the bridge plugin would work on the root namespace, so a
        test that delegates by mistake must fail loudly instead.
        """
        if self.host_ns:
            return REFERENCE_PLUGINS
        stand_ins = self.tmp / "no-delegation"
        if not stand_ins.exists():
            stand_ins.mkdir()
            for plugin in ("bridge", "host-local", "portmap"):
                stub = stand_ins / plugin
                stub.write_text(
                    '#!/bin/sh\necho \'{"code": 999, "msg": "delegated outside a test netns"}\'\nexit 1\n'
                )
                stub.chmod(0o755)
        return stand_ins

    def state_files(self) -> list[str]:
        return sorted(p.name for p in self.data_dir.glob("*")) if self.data_dir.exists() else []

    def allocations(self, network: str = "ovctest") -> dict[str, str]:
        """host-local's allocations: address → container ID."""
        network_dir = self.ipam_dir / network
        if not network_dir.exists():
            return {}
        return {
            path.name: path.read_text().split()[0]
            for path in network_dir.iterdir()
            if path.name != "lock" and not path.name.startswith("last_reserved_ip")
        }

    def links(self, netns: str) -> list[str]:
        """Interface names in ``netns`` (``eth0@if7`` → ``eth0``)."""
        out = run_netns(["ip", "-n", netns, "-o", "link", "show"]).stdout
        return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]

    def ping(self, netns: str, address: str) -> bool:
        return (
            run_netns(["ip", "netns", "exec", netns, "ping", "-c1", "-W2", address], check=False).returncode
            == 0
        )

    def cleanup(self) -> None:
        for name in [*self.namespaces, *([self.host_ns] if self.host_ns else [])]:
            run_netns(["ip", "netns", "del", name], check=False)


@pytest.fixture
def node(tmp_path: Path, plugin_dir: Path) -> Node:
    """A host without namespaces: for calls that fail or succeed before any delegation."""
    return Node(tmp_path, plugin_dir)


@pytest.fixture
def host(tmp_path: Path, plugin_dir: Path) -> Iterator[Node]:
    """A host with its own namespace, where the bridge and the veth host ends will live."""
    host_ns = f"{RUN_PREFIX}h{next(_names)}"
    run_netns(["ip", "netns", "add", host_ns])
    node = Node(tmp_path, plugin_dir, host_ns=host_ns)
    try:
        run_netns(["ip", "-n", host_ns, "link", "set", "lo", "up"])
        yield node
    finally:
        node.cleanup()
