"""Commands of the lab: run one in a namespace, find the lab's namespaces, stop their processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


class LabError(RuntimeError):
    """A lab step failed; the message names the step and the command's error output."""


def sh(*args: str, netns: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run a command (inside ``netns`` when given); raise LabError with its stderr on failure."""
    command = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def lab_namespaces(name: str) -> list[str]:
    """Namespaces belonging to lab ``name`` (by prefix), including ones a crash left behind."""
    out = sh("ip", "netns", "list", check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [ns for ns in names if ns.startswith(f"{name}-")]


def pid_state(pid: int, running: set[int]) -> str:
    """How ``status`` shows a recorded pid: stopped, running, or gone (among ``running`` or not)."""
    if not pid:
        return "stopped"
    return f"pid {pid}" if pid in running else f"pid {pid} gone"


def stop_pid(pid: int, sig: int, timeout: float) -> None:
    """Send ``sig`` to ``pid`` and wait for it to go; SIGKILL it if it is still there after ``timeout``."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return
        except ChildProcessError:
            pass  # not our child: poll for its disappearance instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def namespace_pids(netns: str) -> set[int]:
    """The pids of every process inside network namespace ``netns``."""
    out = sh("ip", "netns", "pids", netns, check=False)
    return {int(p) for p in out.split() if p.isdigit()}


def kill_namespace_processes(netns: str) -> None:
    """Kill whatever still runs in netns (a crashed run's agents), so deletion frees it."""
    for pid in namespace_pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def log_tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of a process's log joined on one line, for an error message."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
