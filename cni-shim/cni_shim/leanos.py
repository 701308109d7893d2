"""The part of ``os`` the shim uses, without importing ``os``.

Under ``python -S`` nothing has imported ``os`` yet, and importing it runs ``_collections_abc``
to build ``os.environ``: ~1 ms of every CNI call, a tenth of what the shim adds to a container
start (docs/benchmarks.md). The system calls below are the built-in ``posix`` module's own,
the very objects ``os`` re-exports; only the few pure-Python helpers of ``os`` the shim needs
(environment, path joining, ``makedirs``) are written out here.
"""

import sys
from _stat import S_ISREG
from posix import (  # noqa: F401  (re-exported for the other modules)
    O_CREAT,
    O_TRUNC,
    O_WRONLY,
    POSIX_SPAWN_DUP2,
    X_OK,
    _exit,
    access,
    close,
    fspath,
    getpid,
    link,
    listdir,
    mkdir,
    open,
    pipe,
    posix_spawn,
    read,
    replace,
    set_blocking,
    stat,
    unlink,
    waitpid,
    waitstatus_to_exitcode,
    write,
)
from posix import environ as _environ_bytes

PATHSEP = ":"


def environ() -> dict[str, str]:
    """The process environment, decoded the way ``os.environ`` decodes it."""
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {
        key.decode(encoding, errors): value.decode(encoding, errors) for key, value in _environ_bytes.items()
    }


def join(directory: str, name: str) -> str:
    """``directory/name`` (``name`` is a plain file name here, never absolute)."""
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


def split(path: str) -> tuple[str, str]:
    """(directory, last component), as ``os.path.split`` for the paths the shim builds."""
    head, sep, tail = path.rpartition("/")
    return head or sep, tail


def is_file(path: str) -> bool:
    try:
        return S_ISREG(stat(path).st_mode)
    except (OSError, ValueError):
        return False


def makedirs(path: str, mode: int) -> None:
    """Create ``path`` with ``mode`` and any missing parents (0777 less the umask, like ``os``)."""
    try:
        mkdir(path, mode)
    except FileExistsError:
        return
    except FileNotFoundError:
        parent = split(path)[0]
        if not parent or parent == path:
            raise
        makedirs(parent, 0o777)
        try:
            mkdir(path, mode)
        except FileExistsError:  # created meanwhile by a concurrent call
            return
