"""Find a flanneld running beside us: the two would both manage ``flannel.<VNI>``, our lease and
``subnet.env`` (a node switched over with ``systemctl stop`` but not ``disable`` gets flanneld
back at the next boot).

Only processes in our own network namespace count: flanneld nodes of a namespace lab share the
machine, not the data path.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def flanneld_pids(proc: Path = PROC) -> list[int]:
    """Pids of processes named ``flanneld`` in this process's network namespace."""
    try:
        ours = os.stat(proc / "self" / "ns" / "net")
        entries = os.listdir(proc)
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            if (proc / entry / "comm").read_bytes() != b"flanneld\n":
                continue
            theirs = os.stat(proc / entry / "ns" / "net")
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            found.append(int(entry))
    return sorted(found)
