"""One agent per state directory: an exclusive lock on ``<state-dir>/lock``, held while it runs.

Two agents on one host (a manual start beside the unit, say) would take turns rewriting the
firewall table and ``subnet.env`` without either noticing. The kernel drops the lock with the
process, so a crashed agent never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class InstanceLocked(RuntimeError):
    """Another live process holds the lock; ``pid`` is the one it wrote (0 if unreadable)."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"{path} is held by pid {pid or 'unknown'}")
        self.path = path
        self.pid = pid


def hold_instance_lock(state_dir: Path) -> int:
    """Lock ``state_dir``/lock for this process and write our pid in it; returns the open fd.

    Raises InstanceLocked if another process holds it, OSError if the directory is unusable.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise InstanceLocked(path, int(holder) if holder.isdigit() else 0) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
