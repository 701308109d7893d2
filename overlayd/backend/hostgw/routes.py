"""The host-gw backend's kernel side: routes to peers' subnets via their PublicIPs.

A route is what flanneld's host-gw installs (``<subnet> via <PublicIP> dev <external>``, main
table, protocol boot, universe scope, no flags), so either agent adopts the other's routes as
they are. Only routes into the overlay Network via a gateway are read as ours (``rtnl.codec``'s
``decode_direct_route``): the underlay's own routes, the default route among them, are never
touched.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from overlayd.backend.desired import Plane, PlaneDiff
from overlayd.backend.entrytable import DirectRoutes, EntryTable
from overlayd.backend.rtnl.codec import Link, decode_direct_route, dump_routes_request, route_summary


class HostRoutes(EntryTable):
    """Owns a raw rtnetlink socket in the current network namespace."""

    def interface(self, ifname: str) -> Link:
        """The external interface; BackendError naming it if it is gone."""
        return self._link_by_name(ifname, "external interface")

    def read(self, ifindex: int, network: IPv4Network) -> Plane:
        """The routes into ``network`` via a gateway on ``ifindex``."""
        return self.read_plane(None, DirectRoutes(ifindex, network))

    def read_anywhere(self, network: IPv4Network) -> Plane:
        """The routes into ``network`` via a gateway on any device: what a previous run left,
        whichever interface it used."""
        seq = self._rtnl.next_seq()
        found = set()
        for message in self._rtnl.dump(dump_routes_request(seq), seq):
            oif = route_summary(message)[1]
            route = decode_direct_route(message, oif, network) if oif else None
            if route is not None:
                found.add(route)
        return Plane(direct=frozenset(found))

    def remove_all(self, plane: Plane) -> None:
        """Delete ``plane``'s routes (a route names no device: each is found by its fields)."""
        self.apply(0, PlaneDiff(remove=plane))
