"""Helpers shared by the lab tests: polling with a named expectation, the lab skip marker, metrics, logs."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

import pytest

from overlayd.lab import Lab, LabHost

needs_lab = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("etcd") is None,
    reason="the lab needs root and etcd (run deploy/setup.sh)",
)

# Short intervals so repairs show up quickly in tests; the defaults are exercised by the demo.
FAST_AGENT_ARGS = ["--reconcile-interval=2"]


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    """Poll check() until it returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# The agent's metrics, read inside the host's namespace (sum of matching samples, 0 if none).
metric = Lab.metric


def log_mark(host: LabHost) -> int:
    """A position in the host's agent.log, for log_since()."""
    return host.log_file.stat().st_size


def log_since(host: LabHost, mark: int) -> str:
    """What the host's agent logged after ``mark``."""
    with host.log_file.open("rb") as log:
        log.seek(mark)
        return log.read().decode(errors="replace")
