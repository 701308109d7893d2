"""Helpers shared by the lab tests: polling with a named expectation, the lab skip marker, metrics, logs,
``overlayd status``, a capture on the underlay."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from overlayd.lab.namespaces import Lab, LabHost, lab_namespaces, random_lab_name, sh

needs_lab = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("etcd") is None,
    reason="the lab needs root and etcd (run deploy/setup.sh)",
)

# Short intervals so repairs show up quickly in tests; the defaults are exercised by the demo.
FAST_AGENT_ARGS = ["--reconcile-interval=2"]


@contextlib.contextmanager
def running_lab(
    tmp_path_factory: pytest.TempPathFactory,
    hosts: int,
    agent_args: tuple[str, ...] = (),
    etcd_members: int = 1,
    converge: bool = True,
    ipv6: bool = False,
    **up: Any,
) -> Iterator[Lab]:
    """A fresh lab (random prefix, fast agents) that is always torn down, leaving no namespace.
    ``ipv6``: the underlay has IPv6 too (pass a dual-stack ``network_config`` to use it)."""
    name = random_lab_name()
    root = str(tmp_path_factory.mktemp("lab"))
    lab = Lab(name, root, agent_args=[*FAST_AGENT_ARGS, *agent_args], etcd_members=etcd_members, ipv6=ipv6)
    try:
        lab.up(hosts=hosts, **up)
        if converge:
            lab.wait_converged(timeout=60)
        yield lab
    finally:
        if os.environ.get("OVERLAYD_TEST_LOGS"):  # the agents' last words, for a failing CI run
            for host in (h for h in lab.hosts if h.log_file.exists()):
                print(f"--- {host.name} agent.log ---\n{host.log_file.read_text(errors='replace')[-3000:]}")
        lab.down()
        assert not lab_namespaces(name), "lab down left namespaces behind"


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    """Poll check() until it returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def underlay_capture(lab: Lab, name: str, bpf: str) -> Iterator[list[str]]:
    """tcpdump on the underlay bridge of the packets ``bpf`` matches while the block runs; the
    list it yields is filled with the capture's lines (``tcpdump -nn``) when the block ends."""
    capture = Path(lab.dir) / f"{name}.pcap"
    tcpdump = subprocess.Popen(
        ["ip", "netns", "exec", lab.underlay_ns, "tcpdump", "-i", "br0", "-U", "-nn", "-w", str(capture),
         bpf],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    lines: list[str] = []
    try:
        wait_for(lambda: capture.exists(), 10, "tcpdump to start")
        time.sleep(0.5)
        yield lines
        time.sleep(0.5)
    finally:
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.wait(timeout=10)
    text = sh("tcpdump", "-nn", "-r", str(capture))
    lines += [line for line in text.splitlines() if line.strip()]


# The agent's metrics, read inside the host's namespace (sum of matching samples, 0 if none).
metric = Lab.metric


def log_mark(host: LabHost, network: str | None = None) -> int:
    """A position in the agent.log of the host's agent of ``network`` (None: the first), for log_since()."""
    return (host.files(network) / "agent.log").stat().st_size


def log_since(host: LabHost, mark: int, network: str | None = None) -> str:
    """What the host's agent (of ``network``) logged after ``mark``."""
    with (host.files(network) / "agent.log").open("rb") as log:
        log.seek(mark)
        return log.read().decode(errors="replace")


def status_json(lab: Lab, host: LabHost, *extra: str) -> dict:
    """``overlayd status --json`` run inside ``host`` (with its ``/run/wireguard``, where ``wg``
    finds wireguard-go's device)."""
    argv = [sys.executable, "-m", "overlayd", "status", "--json", f"--etcd-endpoints={lab.etcd_endpoint}",
            f"--subnet-file={host.subnet_file}", *extra]  # fmt: skip
    done = subprocess.run(host.command(argv), capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"overlayd status failed ({done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def ready(host: LabHost) -> bool:
    """Whether the host's agent reports itself ready (False while it does not serve /metrics yet)."""
    from overlayd.lab.shell import LabError

    try:
        return metric(host, "overlayd_ready") == 1
    except LabError:
        return False


def ip6(host: LabHost, *argv: str) -> str:
    """``ip -6 ...`` inside the host."""
    return sh("ip", "-6", *argv, netns=host.netns)


def put_json_lease(lab: Lab, key: str, value: dict) -> None:
    """Put ``value`` (compact JSON, as flanneld writes) at lease ``key`` on a 600 s etcd lease."""
    from overlayd.lab.hosts import ETCD_PREFIX

    etcd = lab.etcd()
    lease_id = etcd.etcdctl("lease", "grant", "600").split()[1]
    etcd.etcdctl("put", f"{ETCD_PREFIX}/subnets/{key}", json.dumps(value, separators=(",", ":")),
                 f"--lease={lease_id}")  # fmt: skip


def sigkill_and_restart(lab: Lab, host: LabHost) -> None:
    """Kill the host's agent with SIGKILL, start it again and wait until it is ready, with a
    moment of traffic on either side (for a ping running meanwhile to cover the whole gap)."""
    import signal

    time.sleep(0.5)
    lab.stop_agent(host, signal.SIGKILL)
    time.sleep(1)
    lab.start_agent(host)
    wait_for(lambda: ready(host), 30, f"{host.name}'s restarted agent to be ready")
    time.sleep(1)


def raw_leases(lab: Lab) -> dict[str, str]:
    """Every lease key's last element and its value exactly as stored."""
    from overlayd.lab.hosts import ETCD_PREFIX

    lines = lab.etcd().etcdctl("get", f"{ETCD_PREFIX}/subnets/", "--prefix").splitlines()
    return {key.rsplit("/", 1)[1]: value for key, value in zip(lines[::2], lines[1::2], strict=True)}


def lease_values(lab: Lab) -> dict[str, dict]:
    """Every lease key's last element and its value, decoded."""
    return {key: json.loads(value) for key, value in raw_leases(lab).items()}
