"""One backend's data path: container TCP across two hosts against host-to-host TCP on the
underlay, measured in one lab side by side, and the device the backend made (for wireguard: the
kernel's, or wireguard-go's, which the agent logs).

``python -m overlayd.bench.backend_tcp --backend wireguard --tcp-seconds 2 --tcp-rounds 1``
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from overlayd.bench.datapath import Throughput, throughput
from overlayd.bench.stats import median
from overlayd.lab.hosts import DEFAULT_BACKEND, lab_network_config
from overlayd.lab.namespaces import Lab, random_lab_name

# The agent's log lines about the device it made: "flannel-wg: created flannel-wg by starting
# wireguard-go", "flannel.1: created flannel.1".
_DEVICE_LINE = re.compile(r"overlayd\.backend\.[\w.]+: (\S+: (?:created|WireGuard of) .*)$")


@dataclass(frozen=True)
class BackendTcp:
    backend: str
    mtu: str  # FLANNEL_MTU
    device: tuple[str, ...]  # the agent's lines about the device it made
    tcp: Throughput

    @property
    def ratio(self) -> float:
        """Container throughput over host throughput (medians of the runs)."""
        return median(self.tcp.containers) / median(self.tcp.hosts)

    def line(self) -> str:
        gbit = 1e9
        return (f"{self.backend}: containers {median(self.tcp.containers) / gbit:.2f} Gbit/s, hosts "
                f"{median(self.tcp.hosts) / gbit:.2f} Gbit/s, ratio {self.ratio:.2f} (MTU {self.mtu}; "
                f"{'; '.join(self.device) or 'no device line'})")  # fmt: skip


def backend_tcp(backend: str, root: str, seconds: int, rounds: int) -> BackendTcp:
    """Measure ``backend`` in a fresh two-host lab, torn down afterwards whatever happens."""
    lab = Lab(name=random_lab_name(), root=root, agent_args=["--reconcile-interval=2"])
    try:
        lab.up(hosts=2, network_config=lab_network_config(backend))
        lab.wait_converged(timeout=60)
        h1, h2 = lab.hosts
        lab.add_container(h1, "c1")
        c2_ip = lab.add_container(h2, "c2")
        tcp = throughput(
            (lab.container_ns("c1"), lab.container_ns("c2"), c2_ip),
            (h1.netns, h2.netns, h2.ip),
            seconds,
            rounds,
            Path(h1.dir),
        )
        device = tuple(match[1] for line in h1.log_file.read_text().splitlines()
                       if (match := _DEVICE_LINE.search(line)))  # fmt: skip
        return BackendTcp(backend, h1.subnet_env().get("FLANNEL_MTU", "?"), device, tcp)
    finally:
        lab.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m overlayd.bench.backend_tcp", description=__doc__)
    parser.add_argument("--backend", default=DEFAULT_BACKEND, metavar="TYPE")
    parser.add_argument("--tcp-seconds", type=int, default=5)
    parser.add_argument("--tcp-rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="overlayd-bench-") as root:
        print(backend_tcp(args.backend, root, args.tcp_seconds, args.tcp_rounds).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
