"""The delegate config saved at ADD, replayed at DEL and CHECK.

Saving what ADD delegated lets DEL undo exactly that, even after ``subnet.env`` or the
conflist changed. One file per attachment, ``<dataDir>/<network>+<containerID>+<ifname>``:
``+`` cannot occur in a network name or container ID, so the name is unambiguous and two
networks or interfaces of one container never share a file (flannel keyed by container ID only).
Files are written atomically with mode 0600 (they hold the whole network config).
"""

from __future__ import annotations

import os

from . import jsonio

# Start-up cost: `typing`, `dataclasses` and `pathlib` would each add ~10 ms to every CNI call
# (docs/benchmarks.md); annotations stay strings, paths are strings, records are plain classes.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SEPARATOR = "+"


class Attachment:
    """One container interface on one network: the unit ADD creates and DEL removes."""

    def __init__(self, network: str, container_id: str, ifname: str) -> None:
        self.network = network
        self.container_id = container_id
        self.ifname = ifname

    @property
    def filename(self) -> str:
        return _SEPARATOR.join((self.network, self.container_id, self.ifname))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attachment) and self.filename == other.filename

    def __hash__(self) -> int:
        return hash(self.filename)

    def __repr__(self) -> str:
        return f"Attachment({self.network!r}, {self.container_id!r}, {self.ifname!r})"


def write_file_atomically(path: str | os.PathLike[str], data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` (mode 0600) so readers see the old file or the new one.

    With ``exclusive``, fail with FileExistsError instead of replacing an existing file; the
    check and the creation are one atomic step (link(2)), so two racing writers cannot both win.
    """
    directory, name = os.path.split(os.fspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
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
        _unlink(tmp)


class StateStore:
    """Saved delegate configs under one ``dataDir``."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = os.fspath(data_dir)

    def save(self, attachment: Attachment, delegate_config: dict[str, Any]) -> None:
        """Save a new attachment's config; FileExistsError if it is already attached."""
        write_file_atomically(
            os.path.join(self.data_dir, attachment.filename),
            jsonio.dumps(delegate_config).encode(),
            exclusive=True,
        )

    def load(self, attachment: Attachment) -> dict[str, Any] | None:
        """The saved config, or None when nothing (readable) was saved.

        Falls back to flannel's ``<dataDir>/<containerID>`` file when it names the same network,
        so containers attached before the switch to overlayd are still released.
        """
        ours = _read_json(os.path.join(self.data_dir, attachment.filename))
        if ours is not None:
            return ours
        legacy = _read_json(os.path.join(self.data_dir, attachment.container_id))
        if legacy is not None and legacy.get("name") == attachment.network:
            return legacy
        return None

    def remove(self, attachment: Attachment) -> None:
        """Forget the attachment (no error if nothing was saved)."""
        _unlink(os.path.join(self.data_dir, attachment.filename))
        if self.load(attachment) is not None:  # only flannel's file can be left
            _unlink(os.path.join(self.data_dir, attachment.container_id))

    def attachments(self, network: str) -> list[Attachment]:
        """Every attachment saved for ``network`` (for GC)."""
        found = []
        prefix = network + _SEPARATOR
        try:
            names = os.listdir(self.data_dir)
        except FileNotFoundError:
            return []
        for name in names:
            if not name.startswith(prefix):
                continue
            container_id, sep, ifname = name[len(prefix) :].partition(_SEPARATOR)
            if sep:
                found.append(Attachment(network, container_id, ifname))
        return found


def _read_json(path: str) -> dict[str, Any] | None:
    """A JSON object from ``path``; None if it is missing or not a JSON object (torn write)."""
    try:
        with open(path, encoding="utf-8") as stream:
            value = jsonio.loads(stream.read())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _unlink(path: str) -> None:
    """Remove ``path`` if it exists (``contextlib.suppress`` would cost an import per CNI call)."""
    try:  # noqa: SIM105
        os.unlink(path)
    except FileNotFoundError:
        pass
