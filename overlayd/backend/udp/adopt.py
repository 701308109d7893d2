"""Take over a running flanneld's udp data path: its ``flannel0`` and its UDP socket, so that
flanneld can then stop without a packet lost.

flanneld's udp backend keeps ``flannel0`` (a TUN device, alive only while a descriptor holds it)
and its socket in its own process; stopping it would take the device with it. ``pidfd_getfd``
(Linux 5.6) copies a descriptor out of another process, as ptrace would allow: a copy of each keeps
device and socket alive when flanneld exits. While both run, each forwards what it reads; both
send to the same peers, so nothing is lost in between either. Needs the right to ptrace flanneld
(root with ``CAP_SYS_PTRACE``, or the same credentials and a Yama ``ptrace_scope`` of 0).
"""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from overlayd.backend.flanneldproc import PROC, flanneld_pids

SYS_PIDFD_GETFD = 438  # the same number on every architecture (the unified syscall table)


@dataclass(frozen=True)
class Adopted:
    pid: int  # flanneld's
    tun: int  # our copy of its flannel0 descriptor
    sock: socket.socket  # and of its UDP socket


class AdoptError(OSError):
    """No flanneld data path to take, or not the right to take it; the message says which."""


def _udp_inode(bind: str, port: int, proc: Path) -> int | None:
    """The inode of this namespace's UDP socket bound to ``bind:port`` (or the wildcard)."""
    wanted = {f"{int.from_bytes(IPv4Address(address).packed, 'little'):08X}:{port:04X}"
              for address in (bind, "0.0.0.0")}  # fmt: skip
    for line in (proc / "net" / "udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] in wanted:
            return int(fields[9])
    return None


def _copy(pidfd: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    copied = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if copied < 0:
        code = ctypes.get_errno()
        raise AdoptError(code, f"cannot copy flanneld's descriptor {fd}: {os.strerror(code)}")
    return int(copied)


def adopt_flanneld(device: str, bind: str, port: int, proc: Path = PROC) -> Adopted:
    """Copies of the ``device`` TUN descriptor and the ``bind:port`` UDP socket of a flanneld in
    this network namespace, made blocking; AdoptError if there is none or they cannot be taken."""
    inode = _udp_inode(bind, port, proc)
    for pid in flanneld_pids(proc):
        tun_fd = sock_fd = None
        fds = proc / str(pid) / "fd"
        try:
            for entry in os.listdir(fds):
                target = os.readlink(fds / entry)
                info = (proc / str(pid) / "fdinfo" / entry).read_text() if target == "/dev/net/tun" else ""
                if f"iff:\t{device}\n" in info:
                    tun_fd = int(entry)
                elif inode is not None and target == f"socket:[{inode}]":
                    sock_fd = int(entry)
        except OSError:
            continue  # gone meanwhile
        if tun_fd is None or sock_fd is None:
            continue
        pidfd = os.pidfd_open(pid)
        try:
            tun = _copy(pidfd, tun_fd)
            sock = socket.socket(fileno=_copy(pidfd, sock_fd))
        finally:
            os.close(pidfd)
        # flanneld's proxy set both non-blocking; the flags belong to the shared open file, and
        # our loops block in their reads.
        os.set_blocking(tun, True)
        sock.setblocking(True)
        return Adopted(pid, tun, sock)
    raise AdoptError(f"no flanneld in this network namespace holds {device} and UDP {bind}:{port}")
