"""One agent per network per host: an abstract unix socket named after the etcd prefix.

The state directory's lock keeps two agents from sharing a directory, but a second agent started
with another ``--state-dir`` would lease a subnet for the same host and take the first one's
routes and firewall over. Both agents see the same interfaces only inside one network namespace,
so that is what "one host" means here (the lab runs one agent per namespace on one machine): an
abstract socket lives in the network namespace that bound it, and the kernel releases it when its
process dies, so a crashed agent never blocks the next one. Agents for different networks (another
``--etcd-prefix``) claim different names and run side by side. The holder's pid is read with
SO_PEERCRED by connecting to it; the holder never accepts, so this costs it nothing.

Agents of two networks must not share a subnet.env either (flanneld's docs: one daemon per
``-etcd-prefix`` and ``-subnet-file``): each would overwrite the other's, and containers would be
given the other network's subnet. So the subnet file is claimed the same way, under its path.

Abstract names have no permissions: any local user could bind ours first. A holder that runs as
another user than root or ours cannot be an agent, so it is reported and the agent runs without
the claim rather than letting a user keep the node off the network.
"""

from __future__ import annotations

import errno
import hashlib
import socket
import struct
from dataclasses import dataclass

NAME_PREFIX = "overlayd-agent:"
SUBNET_FILE_PREFIX = "overlayd-subnet-file:"
MAX_ABSTRACT_NAME = 107  # sun_path is 108 bytes; the first is the NUL that makes it abstract


@dataclass(frozen=True)
class Holder:
    """The process that holds a claim (pid 0: it could not be read)."""

    pid: int
    uid: int


class NetworkClaimed(RuntimeError):
    """Another agent in this network namespace serves the same etcd prefix (or writes the same
    subnet file: ``prefix`` is then that file's path)."""

    def __init__(self, prefix: str, holder: Holder, option: str = "--etcd-prefix") -> None:
        super().__init__(f"another overlayd (pid {holder.pid or 'unknown'}) serves {option} {prefix}")
        self.prefix = prefix
        self.holder = holder


@dataclass
class NetworkClaim:
    """Held while the agent runs; ``squatter`` is set when a non-agent holds the name instead."""

    name: str
    sock: socket.socket | None
    squatter: Holder | None = None
    companion: NetworkClaim | None = None  # held and closed with this one (the subnet file's)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.companion is not None:
            self.companion.close()


def claim_name(prefix: str, kind: str = NAME_PREFIX) -> str:
    """The abstract socket's name for an etcd prefix, or with ``kind`` SUBNET_FILE_PREFIX for a
    subnet file's path (readable in ``ss -xl`` when it fits)."""
    name = kind + prefix
    if len(name.encode()) > MAX_ABSTRACT_NAME:
        name = kind + "sha256:" + hashlib.sha256(prefix.encode()).hexdigest()
    return name


def claim_network(prefix: str, me: int, kind: str = NAME_PREFIX) -> NetworkClaim:
    """Claim ``prefix`` (with ``kind`` SUBNET_FILE_PREFIX: a subnet file's absolute path) in this
    network namespace for this process, running as uid ``me``.

    Raises NetworkClaimed naming the holder if another agent (a process of root or ``me``) has it.
    """
    name = claim_name(prefix, kind)
    option = "--subnet-file" if kind == SUBNET_FILE_PREFIX else "--etcd-prefix"
    for _ in range(3):  # the holder may exit between our bind and our connect
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind("\0" + name)
            sock.listen(64)
            return NetworkClaim(name, sock)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
        holder = _holder(name)
        if holder is None:
            continue
        if holder.uid not in (0, me):
            return NetworkClaim(name, None, squatter=holder)
        raise NetworkClaimed(prefix, holder, option)
    raise NetworkClaimed(prefix, Holder(0, me), option)


def _holder(name: str) -> Holder | None:
    """Who listens on the abstract socket ``name``; None if no one does any more."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.setblocking(False)  # a listen queue filled by someone else must not hang the start
        try:
            probe.connect("\0" + name)
        except ConnectionRefusedError:
            return None
        except BlockingIOError:
            return Holder(0, 0)  # there, but its queue is full: the pid cannot be read
        pid, uid, _gid = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return Holder(pid, uid)
