"""The delegate config saved at ADD, replayed at DEL and CHECK.

Saving what ADD delegated lets DEL undo exactly that, even after ``subnet.env`` or the
conflist changed. One file per attachment, ``<dataDir>/<network>+<containerID>+<ifname>``:
``+`` cannot occur in a network name or container ID, so the name is unambiguous and two
networks or interfaces of one container never share a file (flannel keyed by container ID only).
Files are written atomically with mode 0600 (they hold the whole network config).

Each file also gets flannel's name, ``<dataDir>/<containerID>``, as a hard link, so that a node
switched back to flannel's plugin still releases the addresses of containers attached here. A
file under flannel's name with a single link was written by flannel's plugin and is read as that
container's state; one with two links is the twin of one of ours and is not.
"""

from __future__ import annotations

from . import jsonio, leanos

# Start-up cost: `typing`, `dataclasses` and `pathlib` would each add ~10 ms to every CNI call
# (docs/benchmarks.md); annotations stay strings, paths are strings, records are plain classes.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from os import PathLike
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


def write_file_atomically(path: str | PathLike[str], data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` (mode 0600) so readers see the old file or the new one.

    With ``exclusive``, fail with FileExistsError instead of replacing an existing file; the
    check and the creation are one atomic step (link(2)), so two racing writers cannot both win.
    Not fsync'd (nor is flannel's or libcni's): the file matters only while its container's
    network namespace exists, which a power cut ends too, and a DEL that finds no file falls
    back to a config rebuilt from ``subnet.env``. The sync cost 0.3 ms of each ADD.
    """
    directory, name = leanos.split(leanos.fspath(path))
    leanos.makedirs(directory, 0o700)
    tmp = leanos.join(directory, f".{name}.{leanos.getpid()}.tmp")
    fd = leanos.open(tmp, leanos.O_WRONLY | leanos.O_CREAT | leanos.O_TRUNC, 0o600)
    try:
        with open(fd, "wb") as stream:
            stream.write(data)
        if exclusive:
            leanos.link(tmp, path)
        else:
            leanos.replace(tmp, path)
    finally:
        _unlink(tmp)


class StateStore:
    """Saved delegate configs under one ``dataDir``."""

    def __init__(self, data_dir: str | PathLike[str]) -> None:
        self.data_dir = leanos.fspath(data_dir)

    def save(self, attachment: Attachment, delegate_config: dict[str, Any]) -> None:
        """Save a new attachment's config; FileExistsError if it is already attached.

        A file there that holds no JSON object is what a power cut can leave of an unsynced
        write: it records no attachment, so it is replaced rather than refusing the ADD forever.
        """
        path = leanos.join(self.data_dir, attachment.filename)
        data = jsonio.dumps(delegate_config).encode()
        try:
            write_file_atomically(path, data, exclusive=True)
        except FileExistsError:
            if _read_json(path) is not None:
                raise
            write_file_atomically(path, data)
        try:  # noqa: SIM105  (`contextlib` would cost an import per CNI call)
            leanos.link(path, self._flannel_path(attachment))
        except OSError:  # flannel's own file, another interface's twin: the first one keeps the name
            pass

    def load(self, attachment: Attachment) -> dict[str, Any] | None:
        """The saved config, or None when nothing (readable) was saved.

        Falls back to a file under flannel's name, ``<dataDir>/<containerID>``, when it names the
        same network and is no twin of another attachment's file, so containers attached by
        flannel's plugin before the switch to overlayd are still released.
        """
        ours = _read_json(leanos.join(self.data_dir, attachment.filename))
        if ours is not None:
            return ours
        flannel_path = self._flannel_path(attachment)
        try:
            if leanos.stat(flannel_path).st_nlink > 1:
                return None
        except FileNotFoundError:
            return None
        flannels = _read_json(flannel_path)
        if flannels is not None and flannels.get("name") == attachment.network:
            return flannels
        return None

    def remove(self, attachment: Attachment) -> None:
        """Forget the attachment (no error if nothing was saved), under both names.

        With our file present, flannel's name goes only if it is that file's twin (same inode),
        told apart by two stat calls instead of reading and parsing the state once more.
        """
        ours, flannels = leanos.join(self.data_dir, attachment.filename), self._flannel_path(attachment)
        ours_id, flannels_id = _file_id(ours), _file_id(flannels)
        if ours_id is not None:
            _unlink(ours)
            if flannels_id == ours_id:
                _unlink(flannels)
        elif flannels_id is not None and self.load(attachment) is not None:  # flannel's own, or a lost twin
            _unlink(flannels)

    def _flannel_path(self, attachment: Attachment) -> str:
        return leanos.join(self.data_dir, attachment.container_id)

    def attachments(self, network: str) -> list[Attachment]:
        """Every attachment saved for ``network`` (for GC)."""
        found = []
        prefix = network + _SEPARATOR
        try:
            names = leanos.listdir(self.data_dir)
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


def _file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``, None if it does not exist."""
    try:
        st = leanos.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _unlink(path: str) -> None:
    """Remove ``path`` if it exists (``contextlib.suppress`` would cost an import per CNI call)."""
    try:  # noqa: SIM105
        leanos.unlink(path)
    except FileNotFoundError:
        pass
