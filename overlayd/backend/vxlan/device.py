"""The VXLAN backend's kernel side: the ``flannel.<VNI>`` device and its per-peer entries.

Programming matches flanneld byte for byte (device attributes, permanent neighbour, ``self``
FDB entry with a ``dst``, onlink route via the peer's ``<subnet>.0``), so either agent can take
over the other's device. Unlike flanneld, the device is repaired rather than trusted: MTU drift,
a wrong MAC or stray addresses are fixed, and an incompatible device is recreated.

The device and the per-peer entries, thousands of them (``backend.entrytable``), go through one raw
rtnetlink socket (``rtnl.socket``, batching) with a ``struct`` codec (``rtnl.codec``), bound to the
network namespace current when the backend is created; no multicast groups are joined
(``backend.monitor`` watches). The
project names pyroute2 as its netlink library and the CLI's ``status`` still uses it, but the
agent no longer imports it: its package ``__init__`` alone cost ~0.1 s of every cold start
(``python -X importtime``: ``pyroute2`` pulls in ndb, ipdb, conntrack and asyncio whichever
submodule is named), and decoding one link message with its generic marshal cost milliseconds
on every periodic pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from overlayd.backend.api import BackendError, DeviceState
from overlayd.backend.entrytable import DirectRoutes, EntryTable
from overlayd.backend.rtnl.codec import (
    IFF_UP,
    Link,
    address_request,
    create_vxlan_request,
    decode_address,
    delete_link_request,
    dump_addresses_request,
    set_link_request,
)
from overlayd.backend.vxlan.config import DEFAULT_VXLAN_PORT

log = logging.getLogger(__name__)

__all__ = ["DeviceSpec", "DirectRoutes", "VxlanBackend"]


@dataclass(frozen=True)
class DeviceSpec:
    """What ``flannel.<VNI>`` should look like."""

    vni: int
    local_ip: IPv4Address
    underlay_ifname: str
    port: int
    gbp: bool
    mtu: int
    address: IPv4Interface
    mac: str
    learning: bool = False

    @property
    def name(self) -> str:
        return f"flannel.{self.vni}"

    @property
    def dstport(self) -> int:
        """The UDP port the kernel reports for this spec (0 means the kernel default)."""
        return self.port or DEFAULT_VXLAN_PORT


class VxlanBackend(EntryTable):
    """The device and, through ``EntryTable``, its entries; owns a raw rtnetlink socket in the
    current network namespace."""

    def __init__(self) -> None:
        super().__init__()
        self._ra_off = 0  # ifindex of the device whose IPv6 router advertisements were turned off

    # -- device -------------------------------------------------------------------------------

    def underlay_mtu(self, ifname: str) -> int:
        """MTU of the external interface, from which the VXLAN MTU is derived."""
        return self._link_by_name(ifname, "underlay interface").mtu

    def underlay_index(self, ifindex: int) -> int | None:
        """The underlay device of the VXLAN device ``ifindex`` (None if it names none)."""
        vxlan = self._get_link(index=ifindex).vxlan
        return vxlan.link if vxlan is not None else None

    def find_compatible_mac(self, spec: DeviceSpec) -> str | None:
        """MAC of an existing ``spec.name`` that ``ensure_device`` would keep, else None.

        Lets the agent adopt the MAC of a device flanneld created, so peers keep reaching us
        through the entries they already hold while our lease is re-published.
        """
        link = self._find_link(spec.name)
        if link is None or self._identity_mismatches(link, spec):
            return None
        return link.mac

    def ensure_device(self, spec: DeviceSpec) -> tuple[DeviceState, list[str]]:
        """Make ``spec.name`` match ``spec``; return its state and the changes made (may be [])."""
        actions: list[str] = []
        link = self._find_link(spec.name)
        if link is not None:
            mismatches = self._identity_mismatches(link, spec)
            learning = bool(link.vxlan and link.vxlan.learning)
            if learning != spec.learning:
                mismatches.append(f"learning {learning}, want {spec.learning}")
            if mismatches:
                with _device_errors(spec.name, "delete the incompatible device"):
                    self._write(lambda seq: delete_link_request(seq, link.index))
                link = None
                _record(spec, f"deleted incompatible {spec.name} ({', '.join(mismatches)})", actions)
        if link is None:
            link = self._create(spec)
            _record(spec, f"created {spec.name}", actions)
        self._fix_link_settings(link, spec, actions)
        self._fix_addresses(link.index, spec, actions)
        if link.index != self._ra_off:
            _ignore_router_advertisements(spec.name)
            self._ra_off = link.index
        if actions:  # read back what the changes left; an unchanged device is as first read
            link = self._get_link(index=link.index)
        underlay = link.vxlan.link if link.vxlan is not None else None
        return DeviceState(link.index, link.mac, link.mtu, underlay), actions

    def find_device(self, name: str) -> tuple[int, int | None] | None:
        """The index of the VXLAN device ``name`` and of its underlay; None if there is none."""
        link = self._find_link(name)
        if link is None or link.vxlan is None:
            return None
        return link.index, link.vxlan.link or None

    def delete_device(self, name: str) -> bool:
        """Delete the VXLAN device ``name``; False if there is none (a device of another kind is
        left alone: it is not ours)."""
        link = self._find_link(name)
        if link is None or link.vxlan is None:
            return False
        with _device_errors(name, "delete the device"):
            self._write(lambda seq: delete_link_request(seq, link.index))
        log.info("%s: deleted", name)
        return True

    def _identity_mismatches(self, link: Link, spec: DeviceSpec) -> list[str]:
        """Attributes that cannot be changed in place (the device must be recreated)."""
        if link.vxlan is None:
            return [f"kind {link.kind} is not vxlan"]
        underlay = self._link_by_name(spec.underlay_ifname, "underlay interface")
        actual = link.vxlan
        checks = [
            ("id", actual.vni, spec.vni),
            ("link", actual.link, underlay.index),
            ("local", actual.local, spec.local_ip),
            ("port", actual.port, spec.dstport),
            ("gbp", actual.gbp, spec.gbp),
        ]
        return [f"{name} {have}, want {want}" for name, have, want in checks if have != want]

    def _create(self, spec: DeviceSpec) -> Link:
        underlay = self._link_by_name(spec.underlay_ifname, "underlay interface")
        with _device_errors(spec.name, "create the device"):
            self._write(lambda seq: create_vxlan_request(
                seq, spec.name, spec.vni, spec.local_ip, underlay.index, spec.dstport,
                spec.learning, spec.gbp, spec.mtu, spec.mac,
            ))
        return self._get_link(name=spec.name)

    def _fix_link_settings(self, link: Link, spec: DeviceSpec, actions: list[str]) -> None:
        """Set MTU, MAC and up state where they differ; flanneld never fixes these."""
        changes: list[tuple[str, dict[str, Any]]] = []
        if link.mtu != spec.mtu:
            changes.append((f"set mtu {spec.mtu} (was {link.mtu})", {"mtu": spec.mtu}))
        if link.mac != spec.mac:
            changes.append((f"set mac {spec.mac} (was {link.mac})", {"mac": spec.mac}))
        if not link.flags & IFF_UP:
            changes.append(("set up", {"up": True}))
        for action, attrs in changes:
            with _device_errors(spec.name, action):
                self._write(partial(set_link_request, index=link.index, **attrs))
            _record(spec, action, actions)

    def _fix_addresses(self, index: int, spec: DeviceSpec, actions: list[str]) -> None:
        """Leave exactly ``spec.address`` as the device's IPv4 address."""
        present = False
        seq = self._rtnl.next_seq()
        found = [decode_address(m) for m in self._rtnl.dump(dump_addresses_request(seq, index), seq)]
        for item in found:
            if item is None or item.index != index:
                continue
            address = IPv4Interface((item.ip, item.prefixlen))
            if address == spec.address:
                present = True
                continue
            with _device_errors(spec.name, f"remove address {address}"):
                self._write(partial(address_request, index=index, ip=item.ip, prefixlen=item.prefixlen,
                                    add=False))
            _record(spec, f"removed address {address}", actions)
        if not present:
            with _device_errors(spec.name, f"add address {spec.address}"):
                self._write(lambda seq: address_request(seq, index, spec.address.ip,
                                                        spec.address.network.prefixlen, True))
            _record(spec, f"added address {spec.address}", actions)


def _record(spec: DeviceSpec, action: str, actions: list[str]) -> None:
    """Log one device change as it happens and add it to the caller's list."""
    log.info("%s: %s", spec.name, action)
    actions.append(action)


@contextmanager
def _device_errors(device: str, what: str) -> Iterator[None]:
    """Turn a netlink error into a BackendError that names the device and the step."""
    try:
        yield
    except OSError as err:
        raise BackendError(f"{device}: cannot {what}: {err.strerror}") from err


def _ignore_router_advertisements(ifname: str) -> None:
    """Set ``accept_ra`` 0 on the device, as flanneld does: nothing on the overlay may configure
    its addresses or routes. Without IPv6 there is no such setting, and nothing to do."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/accept_ra", "w") as setting:
            setting.write("0")
    except FileNotFoundError:
        log.debug("%s: no IPv6 on this host, no accept_ra to set", ifname)
    except OSError as exc:  # e.g. a read-only /proc/sys (systemd's ProtectKernelTunables)
        log.warning("%s: IPv6 router advertisements left on: cannot write accept_ra (%s)", ifname, exc)

