"""The namespace lab as a fixture: real etcd, real agents, torn down even when a test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from labtools import FAST_AGENT_ARGS

from overlayd.lab import Lab, lab_namespaces, random_lab_name


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    name = random_lab_name()
    lab = Lab(name=name, root=str(tmp_path_factory.mktemp("lab")), agent_args=FAST_AGENT_ARGS)
    try:
        lab.up(hosts=3)
        lab.wait_converged(timeout=60)
        yield lab
    finally:
        logs = {
            h.name: h.log_file.read_text(errors="replace")[-3000:] for h in lab.hosts if h.log_file.exists()
        }
        lab.down()
        assert not lab_namespaces(name), "lab down left namespaces behind"
        if os.environ.get("OVERLAYD_TEST_LOGS"):
            for host, text in logs.items():
                print(f"--- {host} agent.log ---\n{text}")
