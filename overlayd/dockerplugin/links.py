"""The kernel side of an endpoint: the shared bridge and one veth pair per container (pyroute2).

The bridge is made as the CNI ``bridge`` plugin makes it (``isGateway``): named by the conflist,
MTU from ``subnet.env``, a MAC address of its own, up, holding the gateway address with the
subnet's length, forwarding on.
A bridge that holds another IPv4 address is refused, not changed, as ``bridge`` refuses it, so the
two never take turns rewriting it. dockerd moves the container end into the container itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def random_mac() -> str:
    """A random locally administered unicast MAC. A bridge given one keeps it; without one it takes
    its lowest port's MAC, which changes as containers come and go and leaves every container's
    neighbour entry for the gateway stale (lost packets until it is probed again). The CNI bridge
    plugin sets one too."""
    first, *rest = os.urandom(6)
    return ":".join(f"{byte:02x}" for byte in ((first & 0xFE) | 0x02, *rest))


class LinkError(Exception):
    """A bridge or veth that cannot be made as needed; the message names the device and the fix."""


class Links:
    """Bridge and veth operations in the plugin's own network namespace."""

    def __init__(self) -> None:
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def ensure_bridge(self, name: str, gateway: str, prefixlen: int, mtu: int) -> int:
        """The bridge's index, made or completed as the CNI bridge plugin would leave it."""
        index = self._index(name)
        if index is None:
            try:
                self.ipr.link("add", ifname=name, kind="bridge", mtu=mtu, address=random_mac())
            except NetlinkError as err:
                if err.code != 17:  # EEXIST: a CNI ADD made it a moment ago
                    raise LinkError(f"cannot create bridge {name}: {err}") from None
            index = self._index(name)
            log.info("created bridge %s (mtu %d)", name, mtu)
        if index is None:
            raise LinkError(f"bridge {name} vanished while being set up")
        link = self.ipr.get_links(index)[0]
        if (
            link.get_attr("IFLA_LINKINFO") is None
            or link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") != "bridge"
        ):
            raise LinkError(
                f"{name} exists and is not a bridge; remove it or set delegate.bridge in the conflist"
            )
        addresses = {
            (a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in self.ipr.get_addr(index=index, family=2)
        }
        if (gateway, prefixlen) not in addresses:
            if addresses:
                held = ", ".join(f"{a}/{n}" for a, n in sorted(addresses))
                raise LinkError(
                    f"bridge {name} holds {held}, not the gateway {gateway}/{prefixlen} of this "
                    f"host's subnet; remove the old address (ip addr flush dev {name})"
                )
            self.ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
            log.info("bridge %s: gateway %s/%d", name, gateway, prefixlen)
        if not link["flags"] & 1:
            self.ipr.link("set", index=index, state="up")
        if IP_FORWARD.read_text().strip() != "1":
            IP_FORWARD.write_text("1")
        return index

    def add_veth(self, host_end: str, container_end: str, bridge_index: int, mtu: int, hairpin: bool) -> None:
        """A veth pair with ``host_end`` up on the bridge; a leftover of the same name is replaced."""
        try:
            try:
                self._add_veth(host_end, container_end, bridge_index, mtu)
            except NetlinkError as err:
                if err.code != 17:  # EEXIST: a leftover of an earlier try; replace it
                    raise
                self.remove(host_end)
                self.remove(container_end)
                self._add_veth(host_end, container_end, bridge_index, mtu)
            if hairpin:
                index = self._index(host_end)
                if index is None:
                    raise LinkError(f"veth {host_end} vanished while being set up")
                self.ipr.brport("set", index=index, mode=1)
        except NetlinkError as err:
            self.remove(host_end)
            raise LinkError(f"cannot create veth {host_end}: {err}") from None

    def _add_veth(self, host_end: str, container_end: str, bridge_index: int, mtu: int) -> None:
        # One message makes the pair, enslaves the host end and brings it up.
        self.ipr.link("add", ifname=host_end, kind="veth", mtu=mtu, master=bridge_index, state="up",
                      peer={"ifname": container_end, "mtu": mtu})  # fmt: skip

    def remove(self, name: str) -> bool:
        """Delete link ``name`` (a veth takes its peer along); False when there was none."""
        index = self._index(name)
        if index is None:
            return False
        try:
            self.ipr.link("del", index=index)
        except NetlinkError as err:
            if err.code != 19:  # ENODEV: gone meanwhile
                raise LinkError(f"cannot delete {name}: {err}") from None
        return True

    def exists(self, name: str) -> bool:
        return self._index(name) is not None

    def _index(self, name: str) -> int | None:
        """The link's index by one RTM_GETLINK for its name (not a dump of every link)."""
        try:
            return int(self.ipr.link("get", ifname=name)[0]["index"])
        except NetlinkError as err:
            if err.code == 19:  # ENODEV
                return None
            raise
