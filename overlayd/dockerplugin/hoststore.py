"""Addresses reserved in the CNI ``host-local`` plugin's own store, under its own lock.

Docker's containers and CNI-attached ones draw from one pool: this host's subnet. Rather than
splitting the subnet in two (a /28 would leave each side a handful of addresses, and the split
would have to be chosen before knowing which runtime the host runs most), the plugin reserves in
the directory host-local keeps for the CNI network, ``<dataDir>/<network name>/``, exactly as
host-local does (containernetworking-plugins ``backend/disk``): one file per address, named by
the address and holding ``<owner ID>\\r\\n<interface>``, created with ``O_EXCL``;
``last_reserved_ip.0`` for round-robin; and every change made holding ``flock(LOCK_EX)`` on the
file ``lock`` there. So neither can hand out an address the other holds, whichever runs first.

The owner ID of Docker's addresses (``OWNER``) is no CNI container ID a runtime would make,
so a CNI DEL (which releases by container ID) never frees them, and a release here frees only
addresses this plugin reserved.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from overlayd.base.atomicfile import write_atomic

OWNER = "overlayd-docker-plugin"
LAST_RESERVED = "last_reserved_ip.0"  # range set 0: the shim writes one range per family
LOCK = "lock"
LOCK_TIMEOUT = 10.0  # seconds


class StoreError(Exception):
    """A reservation that cannot be made or undone; the message names the address and the fix."""


@dataclass(frozen=True)
class Reservation:
    """One address file: the address and who holds it (owner ID and interface, as host-local writes)."""

    address: IPv4Address
    owner: str
    interface: str

    @property
    def ours(self) -> bool:
        return self.owner == OWNER


def candidates(subnet: IPv4Network, gateway: IPv4Address, last: IPv4Address | None) -> Iterator[IPv4Address]:
    """Every assignable address of ``subnet`` once, starting after ``last`` and wrapping, as
    host-local walks its range: network, broadcast and gateway left out."""
    hosts = [address for address in subnet.hosts() if address != gateway]
    start = 0
    if last is not None and last in subnet:
        start = next((i for i, address in enumerate(hosts) if address > last), 0)
    yield from hosts[start:]
    yield from hosts[:start]


class HostLocalStore:
    """host-local's directory for one CNI network (``<data_dir>/<network>``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold host-local's lock: a concurrent CNI ADD or DEL waits until we are done. StoreError
        when another process holds it for ``timeout`` seconds (a hung plugin must not hang dockerd)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK, os.O_RDONLY | os.O_CREAT, 0o750)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"{self.directory / LOCK} is held by another process for {timeout:.0f} s "
                            "(a hung CNI plugin?); `fuser -v` on it names the holder"
                        ) from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def reserve(
        self, subnet: IPv4Network, gateway: IPv4Address, wanted: IPv4Address | None, tag: str
    ) -> IPv4Address:
        """Reserve ``wanted``, or the next free address after the last one reserved; StoreError
        when ``wanted`` is taken or outside the subnet, or the subnet is full."""
        with self.locked():
            if wanted is not None:
                if wanted not in subnet or wanted in (
                    subnet.network_address,
                    subnet.broadcast_address,
                    gateway,
                ):
                    raise StoreError(
                        f"address {wanted} is not assignable in {subnet} (gateway {gateway}); "
                        f"ask for one between {gateway + 1} and {subnet.broadcast_address - 1}"
                    )
                if not self._create(wanted, tag):
                    raise StoreError(
                        f"address {wanted} is in use ({self._describe(wanted)}); ask for another or none"
                    )
                return wanted
            for address in candidates(subnet, gateway, self._last_reserved()):
                if self._create(address, tag):
                    write_atomic(self.directory / LAST_RESERVED, str(address), durable=False)
                    return address
        raise StoreError(
            f"no free address left in {subnet}: every one is held by a Docker or a CNI container "
            f"(see {self.directory}); remove a container, or give the network a larger SubnetLen"
        )

    def release(self, address: IPv4Address) -> bool:
        """Free ``address`` if this plugin holds it; False when nothing was held. StoreError (and
        nothing removed) when a CNI container holds it."""
        with self.locked():
            held = self.holder(address)
            if held is None:
                return False
            if not held.ours:
                raise StoreError(
                    f"address {address} is held by CNI container {held.owner} ({held.interface}), "
                    "not by Docker: left in place"
                )
            (self.directory / str(address)).unlink(missing_ok=True)
            return True

    def holder(self, address: IPv4Address) -> Reservation | None:
        try:
            text = (self.directory / str(address)).read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return None
        owner, _, interface = text.partition("\r\n")
        return Reservation(address, owner.strip(), interface.strip())

    def reservations(self) -> list[Reservation]:
        """Every address file in the directory, Docker's and CNI's."""
        found = []
        for path in sorted(self.directory.glob("*")):
            try:
                address = IPv4Address(path.name)
            except ValueError:
                continue  # the lock, last_reserved_ip.N, or another file
            held = self.holder(address)
            if held is not None:
                found.append(held)
        return found

    def _create(self, address: IPv4Address, tag: str) -> bool:
        try:
            fd = os.open(self.directory / str(address), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:  # no fsync, as host-local: a reboot ends every container
            handle.write(f"{OWNER}\r\n{tag}")
        return True

    def _last_reserved(self) -> IPv4Address | None:
        try:
            return IPv4Address((self.directory / LAST_RESERVED).read_text().strip())
        except (OSError, ValueError):
            return None

    def _describe(self, address: IPv4Address) -> str:
        held = self.holder(address)
        if held is None:
            return "reserved a moment ago"
        return "by Docker" if held.ours else f"by CNI container {held.owner}"
