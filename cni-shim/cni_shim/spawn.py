"""Run a program with bytes on its stdin and its stdout and stderr captured.

This is the part of ``subprocess.run(input=..., capture_output=True)`` a CNI plugin needs.
``subprocess`` itself imports ``selectors``, ``threading``, ``signal``, ``locale`` and
``contextlib``: ~5 ms on every ADD, DEL and CHECK (docs/benchmarks.md). Here: ``posix_spawn``
with three pipes, and one ``poll`` loop that feeds stdin while draining both outputs, so a child
that writes much before it has read all its input cannot deadlock against us.
"""

from __future__ import annotations

import _signal  # `signal` would import `enum`; only the numbers are needed
import select

from . import leanos

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# Python ignores these; a child must start with the default actions (as subprocess restores them).
_DEFAULT_SIGNALS = (_signal.SIGPIPE, _signal.SIGXFSZ)
_READ_SIZE = 65536


class Completed:
    """A finished child: its exit status (negative: killed by that signal) and its output."""

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def run(program: str, stdin: bytes, env: Mapping[str, str]) -> Completed:
    """Start ``program`` (a path) with ``env``, write ``stdin``, wait; OSError if it cannot start."""
    stdin_read, stdin_write = leanos.pipe()
    stdout_read, stdout_write = leanos.pipe()
    stderr_read, stderr_write = leanos.pipe()
    try:
        pid = leanos.posix_spawn(
            program,
            [program],
            env,
            file_actions=[
                (leanos.POSIX_SPAWN_DUP2, stdin_read, 0),
                (leanos.POSIX_SPAWN_DUP2, stdout_write, 1),
                (leanos.POSIX_SPAWN_DUP2, stderr_write, 2),
            ],
            setsigdef=_DEFAULT_SIGNALS,
        )
    except OSError:
        for fd in (stdin_write, stdout_read, stderr_read):
            leanos.close(fd)
        raise
    finally:
        for fd in (stdin_read, stdout_write, stderr_write):  # the child's ends
            leanos.close(fd)
    output = _communicate(stdin_write, stdin, {stdout_read: [], stderr_read: []})
    _, status = leanos.waitpid(pid, 0)
    return Completed(leanos.waitstatus_to_exitcode(status), output[stdout_read], output[stderr_read])


def _communicate(stdin_fd: int, data: bytes, outputs: dict[int, list[bytes]]) -> dict[int, bytes]:
    """Write ``data`` to ``stdin_fd`` and read every fd in ``outputs`` to EOF; close them all."""
    poller = select.poll()
    for fd in outputs:
        poller.register(fd, select.POLLIN)
    pending = memoryview(data)
    if pending:
        leanos.set_blocking(stdin_fd, False)  # a write then takes what fits instead of blocking
        poller.register(stdin_fd, select.POLLOUT)
    else:
        leanos.close(stdin_fd)
    open_fds = len(outputs) + bool(pending)
    while open_fds:
        for fd, events in poller.poll():
            if fd == stdin_fd:
                try:
                    pending = pending[leanos.write(fd, pending) :] if events & select.POLLOUT else pending[:0]
                except BrokenPipeError:  # the child exited or closed stdin without reading it all
                    pending = pending[:0]
                if pending:
                    continue
            else:
                chunk = leanos.read(fd, _READ_SIZE)
                if chunk:
                    outputs[fd].append(chunk)
                    continue
            poller.unregister(fd)
            leanos.close(fd)
            open_fds -= 1
    return {fd: b"".join(chunks) for fd, chunks in outputs.items()}
