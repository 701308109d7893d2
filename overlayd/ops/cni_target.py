"""What ``overlayd cni`` attaches: a netns path, an ``ip netns`` name, or a Docker container.

For ``docker run --net=none`` the container's name or ID is enough: its network namespace is
``/proc/<pid>/ns/net`` of its first process, and its CNI container ID is Docker's own full ID,
so DEL finds ADD's cache even after the container has stopped (and its namespace is gone).
The docker client is asked, so ``DOCKER_HOST`` chooses the daemon as it does for ``docker``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")


@dataclass(frozen=True)
class CniTarget:
    netns: str  # a path; "" for a Docker container that no longer runs (DEL needs none)
    container_id: str
    described: str  # as errors name it


def netns_path(netns: str) -> str:
    """A path as given; a bare name means ``ip netns``'s /var/run/netns/<name>."""
    return netns if "/" in netns else str(NETNS_DIR / netns)


def container_id_for(netns: str) -> str:
    """A stable container ID per netns path (cnitool hashes the path too)."""
    return "overlayd-" + hashlib.sha512(netns.encode()).hexdigest()[:16]


def resolve_target(given: str) -> CniTarget:
    """A path or an existing ``ip netns`` name as before; otherwise a Docker container if the
    docker client knows one by that name or ID; otherwise the ``ip netns`` path (which then fails
    naming it)."""
    if "/" not in given and not (NETNS_DIR / given).exists():
        container = docker_container(given)
        if container is not None:
            return container
    path = netns_path(given)
    return CniTarget(path, container_id_for(path), path)


def docker_container(name: str) -> CniTarget | None:
    """The Docker container ``name`` (a name or an ID), or None when there is no docker client or
    no such container."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        argv = [docker, "inspect", "--type", "container", "--format", "{{.Id}} {{.State.Pid}}", name]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 2 or not fields[1].isdigit():
        return None
    container_id, pid = fields[0], int(fields[1])
    netns = f"/proc/{pid}/ns/net" if pid > 0 else ""
    return CniTarget(netns, container_id, f"Docker container {name}")
