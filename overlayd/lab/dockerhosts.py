"""``overlayd lab up --docker``: a dockerd and the Docker plugin on every lab host, with containers.

On each host: a dockerd without a bridge of its own (``lab/docker.py``), ``overlayd docker-plugin``
beside it (``lab/plugin.py``), the network ``overlayd`` (``-d overlayd --ipam-driver overlayd``) and
busybox containers on it, named ``<host>d<k>``; their addresses are kept in the host's record, so
the ping table and ``lab down`` (from any process) find them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path

from overlayd.lab.docker import IMAGE, LabDocker
from overlayd.lab.hosts import LabHost
from overlayd.lab.plugin import DRIVER, LabDockerPlugin
from overlayd.lab.shell import LabError, namespace_pids

NETWORK = "overlayd"


def host_docker(host: LabHost) -> LabDocker:
    """The host's dockerd, with its pid from its pid file when it runs (so ``stop`` removes its
    containers first), also in a process that did not start it."""
    docker = LabDocker(host.netns, Path(host.dir) / "docker")
    with contextlib.suppress(OSError, ValueError):
        pid = int((docker.dir / "dockerd.pid").read_text())
        if pid in namespace_pids(host.netns):  # after a crash the number may be another process's
            docker.pid = pid
    return docker


def start_docker_hosts(hosts: list[LabHost], conflist_for: Callable[[LabHost], Path], per_host: int) -> None:
    """Start dockerd and the plugin on every host and ``per_host`` containers on the plugin's network.
    DockerUnavailable when dockerd cannot run here; what was started stays recorded for ``down``."""
    for host in hosts:
        docker = host_docker(host)
        host.docker = True
        docker.start(("--bridge=none",))
        docker.import_busybox()
        LabDockerPlugin.beside(docker, conflist_for(host)).start()
        # The subnet is named: with the host's CNI containers already on cni0, dockerd would
        # refuse the pool as overlapping a route of the host (docs/docker.md).
        subnet = IPv4Interface(host.subnet_env()["FLANNEL_SUBNET"]).network
        docker.docker("network", "create", "-d", DRIVER, "--ipam-driver", DRIVER, "--subnet", str(subnet),
                      NETWORK)  # fmt: skip
        for k in range(1, per_host + 1):
            name = f"{host.name}d{k}"
            docker.docker("run", "-d", "--name", name, "--network", NETWORK, IMAGE, "/bin/sleep", "infinity")
            template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
            host.docker_containers[name] = docker.docker("inspect", "-f", template, name).strip()


def docker_endpoints(hosts: list[LabHost]) -> list[tuple[str, str, str]]:
    """(name, netns path, address) of every running Docker container of the lab, for ping tables."""
    endpoints = []
    for host in hosts:
        docker = host_docker(host)
        for name, address in host.docker_containers.items():
            with contextlib.suppress(LabError, ValueError):
                endpoints.append((name, f"/proc/{docker.container_pid(name)}/ns/net", address))
    return endpoints


def destroy_docker_hosts(hosts: list[LabHost]) -> None:
    """Remove every container, dockerd and directory the lab's hosts ran Docker with."""
    for host in hosts:
        if host.docker or (Path(host.dir) / "docker").exists():
            host_docker(host).destroy()
            host.docker_containers.clear()
