"""``overlayd lab up --docker``: a dockerd and the Docker plugin per lab host, Docker containers in
the ping table beside CNI ones, and ``lab down`` (another process) removing all of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from labtools import needs_lab

from overlayd.lab.dockerhosts import host_docker
from overlayd.lab.namespaces import Lab, random_lab_name
from overlayd.lab.shell import lab_namespaces

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="needs docker.io (deploy/setup.sh)"),
]


def test_lab_up_docker_puts_docker_containers_in_the_ping_table_and_down_removes_them() -> None:
    # a short root: containerd's socket path under it must fit a unix socket's 108 bytes
    name, root = random_lab_name(), Path(tempfile.mkdtemp(prefix="ld", dir="/tmp"))
    overlayd = [sys.executable, "-m", "overlayd", "lab"]
    where = ["--name", name, "--root", str(root)]
    dockers = []
    try:
        up = subprocess.run([*overlayd, "up", *where, "--hosts", "2", "--containers", "1", "--docker",
                             "--ping"], capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        lab = Lab.load(name, root)
        assert lab is not None
        dockers = [host_docker(host) for host in lab.hosts]
        assert all(docker.leftover_pids() for docker in dockers), "no dockerd runs"
        table = up.stdout.split("ping between containers", 1)[1]
        rows = [line for line in table.splitlines() if re.fullmatch(r"h\d[cd]\d", line.split(" ", 1)[0])]
        assert sorted(row.split()[0] for row in rows) == ["h1c1", "h1d1", "h2c1", "h2d1"], table
        assert all(row.split()[1:].count("ok") == 3 for row in rows) and "FAIL" not in table, table
        addresses = [lab.hosts[0].containers["h1c1"], lab.hosts[0].docker_containers["h1d1"]]
        assert len(set(addresses)) == 2, addresses
    finally:
        down = subprocess.run([*overlayd, "down", *where], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        shutil.rmtree(root, ignore_errors=True)
        assert not lab_namespaces(name), "lab down left namespaces behind"
        for docker in dockers:
            assert not docker.leftover_pids(), f"dockerd of {docker.netns} left processes"
