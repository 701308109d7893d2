"""The delegate config saved at ADD, replayed at DEL and CHECK.

Saving what ADD delegated lets DEL undo exactly that, even after ``subnet.env`` or the
conflist changed. One file per attachment, ``<dataDir>/<network>+<containerID>+<ifname>``:
``+`` cannot occur in a network name or container ID, so the name is unambiguous and two
networks or interfaces of one container never share a file (flannel keyed by container ID only).
Files are written atomically with mode 0600 (they hold the whole network config).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SEPARATOR = "+"


@dataclass(frozen=True)
class Attachment:
    """One container interface on one network: the unit ADD creates and DEL removes."""

    network: str
    container_id: str
    ifname: str

    @property
    def filename(self) -> str:
        return _SEPARATOR.join((self.network, self.container_id, self.ifname))


def write_file_atomically(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` (mode 0600) so readers see the old file or the new one.

    With ``exclusive``, fail with FileExistsError instead of replacing an existing file; the
    check and the creation are one atomic step (link(2)), so two racing writers cannot both win.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class StateStore:
    """Saved delegate configs under one ``dataDir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def save(self, attachment: Attachment, delegate_config: dict[str, Any]) -> None:
        """Save a new attachment's config; FileExistsError if it is already attached."""
        write_file_atomically(
            self.data_dir / attachment.filename,
            json.dumps(delegate_config, indent=1).encode(),
            exclusive=True,
        )

    def exists(self, attachment: Attachment) -> bool:
        return (self.data_dir / attachment.filename).exists()

    def load(self, attachment: Attachment) -> dict[str, Any] | None:
        """The saved config, or None when nothing (readable) was saved.

        Falls back to flannel's ``<dataDir>/<containerID>`` file when it names the same network,
        so containers attached before the switch to overlayd are still released.
        """
        ours = _read_json(self.data_dir / attachment.filename)
        if ours is not None:
            return ours
        legacy = _read_json(self.data_dir / attachment.container_id)
        if legacy is not None and legacy.get("name") == attachment.network:
            return legacy
        return None

    def remove(self, attachment: Attachment) -> None:
        """Forget the attachment (no error if nothing was saved)."""
        (self.data_dir / attachment.filename).unlink(missing_ok=True)
        if self.load(attachment) is not None:  # only flannel's file can be left
            (self.data_dir / attachment.container_id).unlink(missing_ok=True)

    def attachments(self, network: str) -> list[Attachment]:
        """Every attachment saved for ``network`` (for GC)."""
        found = []
        prefix = network + _SEPARATOR
        for path in self.data_dir.glob(f"{network}{_SEPARATOR}*"):
            container_id, sep, ifname = path.name[len(prefix) :].partition(_SEPARATOR)
            if sep:
                found.append(Attachment(network, container_id, ifname))
        return found


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None if it is missing or not a JSON object (torn write)."""
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None
