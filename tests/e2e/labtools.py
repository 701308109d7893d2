"""Helpers shared by the lab tests: polling with a named expectation, the lab skip marker, metrics, logs."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from overlayd.lab import LabHost, sh

needs_lab = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("etcd") is None,
    reason="the lab needs root and etcd (run deploy/setup.sh)",
)

# Short intervals so repairs show up quickly in tests; the defaults are exercised by the demo.
FAST_AGENT_ARGS = ["--reconcile-interval=2"]
METRICS_URL = "http://127.0.0.1:9464/metrics"  # the agent's default --metrics-address


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    """Poll check() until it returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def metric(host: LabHost, sample: str, **labels: str) -> float:
    """One sample of the host agent's /metrics (read inside its namespace); 0 if absent."""
    code = f"import urllib.request; print(urllib.request.urlopen('{METRICS_URL}', timeout=5).read().decode())"
    text = sh(sys.executable, "-c", code, netns=host.netns)
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


def log_mark(host: LabHost) -> int:
    """A position in the host's agent.log, for log_since()."""
    return host.log_file.stat().st_size


def log_since(host: LabHost, mark: int) -> str:
    """What the host's agent logged after ``mark``."""
    with host.log_file.open("rb") as log:
        log.seek(mark)
        return log.read().decode(errors="replace")
