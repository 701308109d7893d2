"""Running one of extension's commands as flanneld does: ``sh -c``, the agent's environment with
the command's variables added, the given text and a newline on standard input; and, unlike
flanneld, with a timeout after which its whole process group is killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# How much of a command's stderr (or output) a log line carries.
SHOWN_BYTES = 400


@dataclass(frozen=True)
class CommandResult:
    """How a command ended. ``status`` None: killed at its timeout. ``stdout`` holds stderr too
    when the command was run with ``combined`` (as flanneld runs PreStartupCommand)."""

    status: int | None
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 0

    def failure(self, timeout: float) -> str:
        """Why it failed, for a log line: the exit status and the end of its stderr (or output)."""
        if self.status is None:
            how = f"timed out after {timeout:g} s and was killed (CommandTimeout)"
        elif self.status < 0:
            how = f"was killed by signal {-self.status}"
        else:
            how = f"failed with exit status {self.status}"
        said = shown(self.stderr or self.stdout)
        return f"{how}: {said}" if said else f"{how} (no output)"


def shown(output: bytes) -> str:
    """The end of ``output`` as one line for a log."""
    text = output.decode("utf-8", "replace").strip()
    if len(text) > SHOWN_BYTES:
        text = "..." + text[-SHOWN_BYTES:]
    return " | ".join(line for line in text.splitlines() if line.strip())


def run_command(
    script: str,
    env: Mapping[str, str],
    stdin: str,
    timeout: float,
    combined: bool = False,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> CommandResult:
    """``sh -c script`` with ``env`` over the agent's own environment and ``stdin`` plus a newline
    on standard input; ``started`` is told the process (to kill it at shutdown)."""
    begun = time.monotonic()
    process = subprocess.Popen(
        ["sh", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if combined else subprocess.PIPE,
        env={**os.environ, **env},
        start_new_session=True,  # its own process group: a timeout kills what it started too
    )
    if started is not None:
        started(process)
    status: int | None
    try:
        out, err = process.communicate((stdin + "\n").encode("utf-8", "replace"), timeout=timeout)
        status = process.returncode
    except subprocess.TimeoutExpired:
        kill_group(process)
        status = None
        try:  # a child that left the group may still hold the pipes: do not wait on it for long
            out, err = process.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            out = err = b""
    return CommandResult(status, out or b"", err or b"", time.monotonic() - begun)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
