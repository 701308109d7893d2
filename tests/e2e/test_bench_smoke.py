"""`overlayd bench` runs end to end on a tiny size and prints a table of numbers (no timing asserted)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from labtools import needs_lab

from overlayd.lab.namespaces import lab_namespaces

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]

TINY = ["--sizes", "20", "--peers", "20", "--runs", "1", "--events", "10", "--churn-rate", "20",
        "--churn-seconds", "1", "--idle", "2", "--cni-runs", "3", "--no-tcp", "--no-plot"]  # fmt: skip
FIGURES = (
    "cold start, 20 peers: all 60 entries",
    "event latency, 20 peers, addition",
    "event latency, 20 peers, update",
    "event latency, 20 peers, removal",
    "hold-down (1 s)",
    "churn 20/s",
    "idle CPU, 20 peers",
    "resident memory, 20 peers",
    "CNI ADD p50: shim + bridge",
)


def test_bench_prints_every_figure_with_a_number_and_writes_the_report(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "benchmarks.md").write_text("# Benchmarks\n\nhand-written notes stay\n")
    done = subprocess.run(
        [sys.executable, "-m", "overlayd", "bench", *TINY, "--docs", str(docs)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for figure in FIGURES:
        row = next((line for line in lines if line.startswith(figure)), None)
        assert row is not None, f"no table row for {figure!r} in:\n{done.stdout[-3000:]}"
        value = row[len(figure) :]
        assert re.search(r"\d+(\.\d+)? (ms|s|MB|%)", value), f"no measured number in row {row!r}"
    report = (docs / "benchmarks.md").read_text()
    assert "hand-written notes stay" in report
    assert "| cold start, 20 peers: all 60 entries (median) |" in report
    assert not (docs / "img").exists(), "--no-plot wrote an image"
    labs = re.findall(r"^lab (\w+):", done.stdout, re.MULTILINE)
    assert labs, "the bench names no lab it built"
    for name in labs:
        assert not lab_namespaces(name), f"lab {name} left namespaces behind"


def test_bench_only_events_prints_additions_updates_removals_and_the_hold_down() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "overlayd", "bench", "--only", "events", "--peers", "20", "--events", "5",
         "--changes", "3"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for figure in FIGURES[1:5]:
        row = next((line for line in done.stdout.splitlines() if line.startswith(figure)), None)
        assert row is not None and re.search(r"\d+(\.\d+)? (ms|s) / \d", row), done.stdout[-3000:]
    assert "full passes meanwhile, by trigger: timer" in done.stdout
    for name in re.findall(r"^lab (\w+):", done.stdout, re.MULTILINE):
        assert not lab_namespaces(name), f"lab {name} left namespaces behind"


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3 (deploy/setup.sh)")
def test_bench_only_udp_prints_both_backends_and_the_forwarders_cpu() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "overlayd", "bench", "--only", "udp", "--tcp-seconds", "1",
         "--tcp-rounds", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for figure, unit in (("TCP container → container over udp", "Mbit/s"),
                         ("TCP container → container over vxlan", "Mbit/s"),
                         ("udp forwarders' CPU (both hosts) per Gbit", "s")):  # fmt: skip
        row = next((line for line in lines if line.startswith(figure)), None)
        assert row is not None and re.search(rf"\d+(\.\d+)? {unit}", row), done.stdout[-3000:]
    labs = re.findall(r"^lab (\w+):", done.stdout, re.MULTILINE)
    assert len(labs) == 2, done.stdout[-3000:]
    for name in labs:
        assert not lab_namespaces(name), f"lab {name} left namespaces behind"


@pytest.mark.skipif(shutil.which("dockerd") is None, reason="needs docker.io (deploy/setup.sh)")
def test_bench_only_docker_prints_docker_run_beside_the_bridge_driver_and_leaves_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "overlayd", "bench", "--only", "docker", "--docker-runs", "2"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for figure in ("docker run -d p50: overlayd plugin network", "docker run -d: added by the plugin",
                   "docker run: the plugin's own handling p50"):  # fmt: skip
        row = next((line for line in lines if line.startswith(figure)), None)
        assert row is not None and re.search(r"\d+(\.\d+)? (ms|s)", row), done.stdout[-3000:]
    assert "Docker's bridge driver" in done.stdout
    labs = re.findall(r"^lab (\w+):", done.stdout, re.MULTILINE)
    assert len(labs) == 1, done.stdout[-3000:]
    assert not lab_namespaces(labs[0]), f"lab {labs[0]} left namespaces behind"
    pattern = f"overlayd-bench-.*{labs[0]}"  # dockerd and containerd name their directories
    leftover = subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False)
    assert leftover.returncode == 1, f"processes of the bench's dockerd left: {leftover.stdout!r}"
