"""``overlayd bench --only udp``: the udp backend's user-space forwarding against VXLAN in the kernel.

Two labs of two hosts with one container each, one on the udp backend and one on vxlan, up at
the same time; iperf3 container → container runs alternate between them, so machine noise hits
both alike. Around each udp run the two forwarders' CPU time (``/proc/<pid>/stat``, user +
system) is read, giving CPU seconds per Gbit moved. flanneld's own udp backend (a C proxy) cannot
run here, so its figure is the one recorded earlier on this machine (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from overlayd.bench.datapath import tcp_rate
from overlayd.bench.stats import Row
from overlayd.lab.hosts import LAB_NETWORK, LabHost
from overlayd.lab.namespaces import Lab, random_lab_name
from overlayd.lab.shell import namespace_pids

# flanneld v0.20.2's udp backend, container to container across two lab hosts on this machine.
FLANNELD_UDP_MBIT = (450, 470)
KERNEL_BACKEND = "vxlan"  # the one compared with: the kernel encapsulates, no process forwards


@dataclass(frozen=True)
class UdpRound:
    udp_bps: float  # bits per second over the udp backend
    kernel_bps: float  # the same over vxlan, right after
    forwarder_cpu: float  # CPU seconds both forwarders spent during the udp run
    forwarder_user: float  # of which in user space (the interpreter), not in the kernel's stack


def forwarder_pid(host: LabHost) -> int:
    """The udp forwarder's pid among the host namespace's processes."""
    for pid in namespace_pids(host.netns):
        try:
            if b"overlayd.backend.udp.forwarder" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise RuntimeError(f"no udp forwarder runs in {host.netns}")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user + system, user) CPU time of ``pid`` so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[11]) / tick


def forwarders_cpu(pids: list[int]) -> tuple[float, float]:
    times = [cpu_seconds(pid) for pid in pids]
    return sum(total for total, _ in times), sum(user for _, user in times)


def pair_lab(root: str, labs: list[Lab], backend: str) -> tuple[tuple[str, str, str], list[LabHost]]:
    """A converged two-host lab on ``backend`` with containers c1 (h1) and c2 (h2); its iperf3
    (client netns, server netns, server IP) and its hosts."""
    lab = Lab(name=random_lab_name(), root=root, agent_args=["--ip-masq"])
    labs.append(lab)
    print(f"lab {lab.name}: {backend}, two hosts with a container each", flush=True)
    lab.up(hosts=2, network_config=json.dumps({"Network": LAB_NETWORK, "Backend": {"Type": backend}}))
    lab.wait_converged(timeout=60)
    lab.add_container(lab.hosts[0], "c1")
    server_ip = lab.add_container(lab.hosts[1], "c2")
    return (lab.container_ns("c1"), lab.container_ns("c2"), server_ip), lab.hosts


def udp_rounds(root: str, labs: list[Lab], seconds: int, rounds: int) -> list[UdpRound]:
    """``rounds`` pairs of iperf3 runs, udp then VXLAN, with the forwarders' CPU around each udp run."""
    udp, udp_hosts = pair_lab(root, labs, "udp")
    kernel, _ = pair_lab(root, labs, KERNEL_BACKEND)
    pids = [forwarder_pid(host) for host in udp_hosts]
    work = Path(root)
    results = []
    for k in range(rounds):
        total, user = forwarders_cpu(pids)
        udp_bps = tcp_rate(*udp, seconds, work)
        total_after, user_after = forwarders_cpu(pids)
        spent = total_after - total
        kernel_bps = tcp_rate(*kernel, seconds, work)
        results.append(UdpRound(udp_bps, kernel_bps, spent, user_after - user))
        print(f"  round {k + 1}: udp {udp_bps / 1e6:.0f} Mbit/s ({spent:.2f} CPU s in the forwarders), "
              f"{KERNEL_BACKEND} {kernel_bps / 1e6:.0f} Mbit/s", flush=True)  # fmt: skip
    return results


def udp_rows(rounds: list[UdpRound], seconds: int) -> list[Row]:
    """Best of each, the ratio within each round's pair, and the forwarders' CPU per Gbit."""
    best_udp, best_kernel = max(r.udp_bps for r in rounds), max(r.kernel_bps for r in rounds)
    paired = [r.udp_bps / r.kernel_bps for r in rounds]
    per_gbit = [r.forwarder_cpu / (r.udp_bps * seconds / 1e9) for r in rounds]
    user_share = [r.forwarder_user / r.forwarder_cpu for r in rounds if r.forwarder_cpu]
    low, high = FLANNELD_UDP_MBIT
    return [
        Row(
            f"TCP container → container over udp (best of {len(rounds)})",
            f"{best_udp / 1e6:.0f} Mbit/s",
            f"flanneld udp {low} to {high} Mbit/s (recorded)",
            f"{best_udp / 1e6 / ((low + high) / 2):.2f}",
            "≥ 0.5",
        ),
        Row(
            f"TCP container → container over {KERNEL_BACKEND}, same run (best of {len(rounds)})",
            f"{best_kernel / 1e6:.0f} Mbit/s",
            f"udp {best_udp / 1e6:.0f} Mbit/s",
            f"udp/{KERNEL_BACKEND} {median(paired):.3f} (median of {len(paired)} pairs)",
        ),
        Row(
            "udp forwarders' CPU (both hosts) per Gbit moved, median (range)",
            f"{median(per_gbit):.2f} s ({min(per_gbit):.2f} to {max(per_gbit):.2f})",
            f"in user space {median(user_share):.0%}" if user_share else "",
        ),
    ]
