"""Helpers shared by the lab tests: polling with a named expectation, the lab skip marker."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

import pytest

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
