"""`overlayd bench` measures the data path of every backend, each beside host to host in the same
run (no figure asserted: the machine is shared); a backend it does not have is refused by name."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from labtools import needs_lab

from overlayd.bench.run import DATA_PATH_BACKENDS
from overlayd.lab.namespaces import lab_namespaces

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "overlayd", "bench", "--only", "tcp", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_every_backend_gets_its_data_path_figures() -> None:
    done = bench("--tcp-seconds", "1", "--tcp-rounds", "1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for backend in DATA_PATH_BACKENDS:
        figure = f"TCP across hosts, {backend}: container → container"
        row = next((line for line in done.stdout.splitlines() if line.startswith(figure)), None)
        assert row is not None, f"no row for {backend} in:\n{done.stdout[-3000:]}"
        goal = r"(≥ 0\.(85|95)|≥ 0\.23 Gbit/s|- \(user space\))"
        assert re.search(r"\d+\.\d\d Gbit/s +host → host \d+\.\d\d Gbit/s +\d+\.\d\d +" + goal, row), row
    labs = re.findall(r"^lab (\w+): data path, ([\w-]+),", done.stdout, re.MULTILINE)
    assert sorted(backend for _, backend in labs) == sorted(DATA_PATH_BACKENDS)
    for name, _ in labs:
        assert not lab_namespaces(name), f"lab {name} left namespaces behind"


def test_a_backend_overlayd_does_not_have_is_refused_by_name() -> None:
    done = bench("--backends", "host-gw,ipip")
    assert done.returncode == 2, done.stderr
    choices = ",".join(DATA_PATH_BACKENDS)
    assert f"--backends ipip: overlayd has no such backend; use some of {choices}" in done.stderr
    assert "lab " not in done.stdout, "nothing is built for a refused choice"


def test_a_backend_without_a_data_path_is_refused_by_name() -> None:
    done = bench("--backends", "alloc")
    assert done.returncode == 2, done.stderr
    assert "--backends alloc: no data path of its own to measure" in done.stderr
