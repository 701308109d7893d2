"""``flannel0``'s kernel side, as flanneld sets it up: the TUN device the forwarder holds gets
``<own subnet's network address>/32`` (no prefix route, no broadcast), the MTU of the external
interface less 28, link up, and one route: the whole Network through it.

Unlike flanneld, which sets this once at start, every pass compares and repairs it: a changed
MTU, a stray or missing address, a deleted route, a link set down.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network

from overlayd.backend.api import BackendError, DeviceState
from overlayd.backend.rtnl.codec import (
    IFF_UP,
    Link,
    address_request,
    decode_address,
    decode_device_route,
    device_route_request,
    dump_addresses_request,
    route_dump_request,
    set_link_request,
)
from overlayd.backend.rtnl.socket import RtnlSocket

APPEAR_TIMEOUT = 1.0  # the forwarder makes a deleted device anew within milliseconds


@dataclass(frozen=True)
class TunSpec:
    name: str
    ifindex: int  # the device the forwarder holds
    mtu: int
    address: IPv4Interface
    network: IPv4Network


class TunDevice:
    """Owns a raw rtnetlink socket in the current network namespace."""

    def __init__(self) -> None:
        self._rtnl = RtnlSocket()

    def close(self) -> None:
        self._rtnl.close()

    def find(self, name: str) -> Link | None:
        return self._rtnl.find_link(name)

    def refuse_foreign(self, name: str) -> None:
        """BackendError if ``name`` exists as another kind of device, which no forwarder could open."""
        link = self.find(name)
        if link is not None and link.kind != "tun":
            raise BackendError(
                f"{name} exists but is a {link.kind or 'plain'} device, not the udp forwarder's TUN; "
                f"delete it (ip link del {name}) and the agent makes its own"
            )

    def ensure(self, spec: TunSpec) -> tuple[DeviceState, list[str]]:
        """Make ``spec.name`` look as ``spec`` says; its state and the changes made."""
        actions: list[str] = []
        link = self._wait_for(spec)
        if link.mtu != spec.mtu or not link.flags & IFF_UP:
            self._write(spec, "set MTU and up",
                        lambda seq: set_link_request(seq, link.index, mtu=spec.mtu, up=True))  # fmt: skip
            actions.append(f"set MTU {spec.mtu} (was {link.mtu}) and up")
        self._ensure_address(spec, link.index, actions)
        self._ensure_route(spec, link.index, actions)
        return DeviceState(link.index, "", spec.mtu), actions

    def _wait_for(self, spec: TunSpec) -> Link:
        deadline = time.monotonic() + APPEAR_TIMEOUT
        while True:
            self.refuse_foreign(spec.name)
            link = self.find(spec.name)
            if link is not None and link.index == spec.ifindex:
                return link
            if time.monotonic() > deadline:
                raise BackendError(f"{spec.name}: the udp forwarder's TUN device (ifindex {spec.ifindex}) "
                                   "did not appear; the next pass retries")  # fmt: skip
            time.sleep(0.02)

    def _ensure_address(self, spec: TunSpec, index: int, actions: list[str]) -> None:
        seq = self._rtnl.next_seq()
        present = False
        for item in [decode_address(m) for m in self._rtnl.dump(dump_addresses_request(seq, index), seq)]:
            if item is None or item.index != index:
                continue
            if IPv4Interface((item.ip, item.prefixlen)) == spec.address:
                present = True
                continue
            self._write(spec, f"remove address {item.ip}/{item.prefixlen}", lambda seq, a=item: (
                address_request(seq, index, a.ip, a.prefixlen, False)))  # fmt: skip
            actions.append(f"removed address {item.ip}/{item.prefixlen}")
        if not present:
            self._write(spec, f"add address {spec.address}", lambda seq: address_request(
                seq, index, spec.address.ip, spec.address.network.prefixlen, True))  # fmt: skip
            actions.append(f"added address {spec.address}")

    def _ensure_route(self, spec: TunSpec, index: int, actions: list[str]) -> None:
        seq = self._rtnl.next_seq()
        messages = self._rtnl.dump(route_dump_request(index, seq), seq)
        routes = {decode_device_route(message, index) for message in messages}
        routes.discard(None)
        for stray in routes - {spec.network}:
            assert stray is not None
            self._write(spec, f"remove route {stray}",
                        lambda seq, dst=stray: device_route_request(seq, index, dst, False))  # fmt: skip
            actions.append(f"removed route {stray}")
        if spec.network not in routes:
            self._write(spec, f"add route {spec.network}",
                        lambda seq: device_route_request(seq, index, spec.network, True))  # fmt: skip
            actions.append(f"added route {spec.network}")

    def _write(self, spec: TunSpec, what: str, build) -> None:  # type: ignore[no-untyped-def]
        seq = self._rtnl.next_seq()
        try:
            self._rtnl.write(build(seq), seq)
        except OSError as err:
            if what.startswith("add route") and err.errno == errno.EEXIST:
                raise BackendError(
                    f"{spec.name}: cannot {what}: another route to {spec.network} exists (a bridge's, "
                    "Docker's?); remove it"
                ) from err
            raise BackendError(f"{spec.name}: cannot {what}: {err.strerror}") from err
