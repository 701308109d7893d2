"""Finding a flanneld that runs beside the agent: in its network namespace, not in another."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from nsutil import in_netns

from overlayd.backend.flanneldproc import flanneld_pids

pytestmark = pytest.mark.root


def _start_flanneld(tmp_path: Path, netns: str | None) -> subprocess.Popen[bytes]:
    """A stand-in named ``flanneld`` (a copy of sleep), in ``netns`` or in this namespace."""
    binary = tmp_path / "flanneld"
    if not binary.exists():
        shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.Popen([*prefix, str(binary), "60"])


def test_a_flanneld_in_the_agents_network_namespace_is_found_and_one_elsewhere_is_not(
    netns: str, tmp_path: Path
) -> None:
    beside = _start_flanneld(tmp_path, netns)
    elsewhere = _start_flanneld(tmp_path, None)  # this pytest's namespace: another host's
    try:
        deadline_checks = 50
        while in_netns(netns, flanneld_pids) != [beside.pid] and deadline_checks:
            deadline_checks -= 1  # `ip netns exec` has to exec flanneld first
            subprocess.run(["sleep", "0.05"], check=True)
        assert in_netns(netns, flanneld_pids) == [beside.pid]
    finally:
        for process in (beside, elsewhere):
            process.kill()
            process.wait()
    assert in_netns(netns, flanneld_pids) == []
