"""Atomic file replacement: readers see the old content or the new, never half of either."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644, durable: bool = True) -> bool:
    """Replace path's content with text (UTF-8) atomically; returns False when it already held text.

    ``durable=False`` skips the fsync: still atomic for readers and across a crash of the process,
    not across one of the machine (for state that dies with the machine's containers anyway).

    A symlink planted at ``path`` is replaced by the new file, never followed (rename does not
    follow links, and the unchanged-content shortcut is skipped for links). Whatever ``path``
    held before, text or not, is compared as bytes, so a binary it replaces is no error.
    """
    data = text.encode()
    try:
        if not path.is_symlink() and path.read_bytes() == data and _mode(path) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
