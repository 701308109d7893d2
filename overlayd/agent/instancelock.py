"""One agent per state directory: an exclusive lock on ``<state-dir>/lock``, held while it runs.

Two agents on one host (a manual start beside the unit, say) would take turns rewriting the
firewall table and ``subnet.env`` without either noticing. The kernel drops the lock with the
process, so a crashed agent never blocks the next one.

The agent runs as root, so its state directory must be one no one else can write: a user who can
create files there could plant a link named ``lock`` and have root truncate and overwrite any file
the link points to. The directory is checked, and the lock is opened without following a link.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path


class InstanceLocked(RuntimeError):
    """Another live process holds the lock; ``pid`` is the one it wrote (0 if unreadable)."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"{path} is held by pid {pid or 'unknown'}")
        self.path = path
        self.pid = pid


class UnsafeStateDir(RuntimeError):
    """The state directory (or its lock file) could be changed by another user; the message says
    what was found and the command that fixes it."""


def state_dir_problem(path: Path, mode: int, owner: int, me: int) -> str | None:
    """Why a directory with this mode and owner is unsafe for an agent running as ``me``, or None."""
    if owner not in (0, me):
        return f"{path} is owned by uid {owner}, who could plant files in it: chown {me} {path}"
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{path} is writable by its group or by everyone (mode {stat.S_IMODE(mode):04o}), who could "
            f"plant files in it: chmod 700 {path}"
        )
    return None


def hold_instance_lock(state_dir: Path) -> int:
    """Lock ``state_dir``/lock for this process and write our pid in it; returns the open fd.

    Raises InstanceLocked if another process holds it, UnsafeStateDir if others could write the
    directory or ``lock`` is not a plain file of ours, OSError if the directory is unusable.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        found = os.fstat(directory)
        if problem := state_dir_problem(state_dir, found.st_mode, found.st_uid, os.geteuid()):
            raise UnsafeStateDir(problem)
        path = state_dir / "lock"
        try:
            # No O_TRUNC and no link followed: whatever is there is checked before a byte changes.
            fd = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o600, dir_fd=directory)  # fmt: skip
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            target = os.readlink("lock", dir_fd=directory)
            raise UnsafeStateDir(
                f"{path} is a symbolic link (to {target}); the lock is never opened through a link: "
                f"remove it (rm {path})"
            ) from None
    finally:
        os.close(directory)
    lock = os.fstat(fd)
    if not stat.S_ISREG(lock.st_mode) or lock.st_nlink != 1:
        os.close(fd)
        raise UnsafeStateDir(
            f"{path} is not a plain file of its own (a device, pipe or a hard link to another file): "
            f"remove it (rm {path})"
        )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise InstanceLocked(path, int(holder) if holder.isdigit() else 0) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
