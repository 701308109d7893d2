"""What the Docker plugin adds to ``docker run``, beside Docker's own bridge driver in the same run.

One lab host runs its agent, a real dockerd (``lab/docker.py``) and ``overlayd docker-plugin``
beside it, with two networks: ``-d overlayd --ipam-driver overlayd`` and Docker's ``bridge``
driver on a subnet of its own. Each round times ``docker run -d`` (the container started, its
network joined) on each, in alternating order so drift hits both alike, then removes both
containers untimed. The figure is the median of the per-round differences: the plugin's cost per
container.
That difference is within the noise of a ~0.4 s ``docker run`` on a shared machine, so the
plugin's own handling of each run (its request handlers from ``RequestAddress`` to the end of
``Join``, summed, from its debug log) is reported beside it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from overlayd.bench.stats import Row, fmt_ratio, fmt_seconds, median
from overlayd.lab.docker import IMAGE, LabDocker
from overlayd.lab.hosts import LabHost
from overlayd.lab.namespaces import Lab
from overlayd.lab.plugin import DRIVER, LabDockerPlugin

PLUGIN_NETWORK = "ovbench"
BRIDGE_NETWORK = "brbench"
BRIDGE_SUBNET = "198.19.250.0/24"  # Docker's bridge network: outside the lab's Network, inside 198.18/15
ADDED_GOAL = "≤ 10 ms"
SERVED = re.compile(r"served (\S+) in ([\d.]+) ms")


@dataclass(frozen=True)
class DockerRunTimes:
    """Seconds per ``docker run -d``, one entry per round."""

    plugin: list[float]
    bridge: list[float]
    handling: list[float]  # the plugin's own handlers per run, summed


def docker_run_times(lab: Lab, host: LabHost, runs: int) -> DockerRunTimes:
    """Start dockerd and the plugin on ``host``, time ``runs`` rounds, stop both (always)."""
    docker = LabDocker(host.netns, Path(host.dir) / "docker")
    plugin = LabDockerPlugin.beside(docker, lab.cni_conflist(host))
    try:
        docker.start(("--bridge=none",))
        docker.import_busybox()
        plugin.start(log_level="debug")
        docker.docker("network", "create", "-d", DRIVER, "--ipam-driver", DRIVER, PLUGIN_NETWORK)
        docker.docker("network", "create", "-d", "bridge", "--subnet", BRIDGE_SUBNET, BRIDGE_NETWORK)
        times: dict[str, list[float]] = {PLUGIN_NETWORK: [], BRIDGE_NETWORK: []}
        for _ in range(2):  # warm-up: image layers, first endpoint of each network
            _round(docker, (PLUGIN_NETWORK, BRIDGE_NETWORK), {PLUGIN_NETWORK: [], BRIDGE_NETWORK: []})
        for n in range(runs):
            order = (PLUGIN_NETWORK, BRIDGE_NETWORK) if n % 2 == 0 else (BRIDGE_NETWORK, PLUGIN_NETWORK)
            _round(docker, order, times)
        handling = handling_per_run(plugin.log_file.read_text())[2:]  # past the warm-up rounds
        return DockerRunTimes(times[PLUGIN_NETWORK], times[BRIDGE_NETWORK], handling)
    finally:
        docker.destroy()
        plugin.stop()


def _round(docker: LabDocker, order: tuple[str, ...], times: dict[str, list[float]]) -> None:
    for network in order:
        started = time.perf_counter()
        docker.docker("run", "-d", "--name", f"b-{network}", "--network", network, IMAGE, "/bin/sleep", "600")
        times[network].append(time.perf_counter() - started)
    docker.docker("rm", "-f", *(f"b-{network}" for network in order))


def handling_per_run(log_text: str) -> list[float]:
    """Seconds the plugin spent in its handlers per ``docker run``: from each RequestAddress up to
    the next DeleteEndpoint (``docker rm``, untimed), from its ``served M in X ms`` lines."""
    runs: list[float] = []
    in_run = False
    for match in SERVED.finditer(log_text):
        method, ms = match.group(1), float(match.group(2))
        if method == "IpamDriver.RequestAddress" and not in_run:
            runs.append(0.0)
            in_run = True
        elif method == "NetworkDriver.DeleteEndpoint":
            in_run = False
        if in_run:
            runs[-1] += ms / 1000
    return runs


def docker_rows(times: DockerRunTimes) -> list[Row]:
    """The medians side by side, and the median of the per-round differences: each round runs both
    back to back, so that difference leaves out the drift between rounds the medians carry."""
    plugin, bridge = median(times.plugin), median(times.bridge)
    added = median([p - b for p, b in zip(times.plugin, times.bridge, strict=True)])
    return [
        Row("docker run -d p50: overlayd plugin network", fmt_seconds(plugin),
            f"Docker's bridge driver {fmt_seconds(bridge)}", fmt_ratio(plugin, bridge)),
        Row(f"docker run -d: added by the plugin, p50 of {len(times.plugin)} paired rounds",
            _signed(added), goal=ADDED_GOAL),
        Row("docker run: the plugin's own handling p50 (RequestAddress to Join)",
            fmt_seconds(median(times.handling)), goal=ADDED_GOAL),
    ]  # fmt: skip


def _signed(seconds: float) -> str:
    return fmt_seconds(seconds) if seconds >= 0 else f"-{fmt_seconds(-seconds)}"
