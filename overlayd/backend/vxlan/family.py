"""A dual-stack VXLAN host's two devices: each family's entries on its own device.

The entries of both families go through the same desired state and diff (``backend.desired``);
only here are they told apart, by the version of the address they carry, for the device that
holds them (``flannel.<VNI>`` for IPv4, ``flannel-v6.<VNI>`` for IPv6).
"""

from __future__ import annotations

from overlayd.backend.desired import Plane, PlaneDiff


def _split(plane: Plane) -> tuple[Plane, Plane]:
    """``plane``'s IPv4 entries and its IPv6 ones (direct routes: IPv4, on the underlay)."""
    if not plane:
        return plane, plane
    neighs6 = frozenset(n for n in plane.neighs if n.ip.version == 6)
    fdbs6 = frozenset(f for f in plane.fdbs if f.dst.version == 6)
    routes6 = frozenset(r for r in plane.routes if r.dst.version == 6)
    if not neighs6 and not fdbs6 and not routes6:
        return plane, Plane()
    v4 = Plane(plane.neighs - neighs6, plane.fdbs - fdbs6, plane.routes - routes6, plane.direct)
    return v4, Plane(neighs6, fdbs6, routes6)


def split_diff(diff: PlaneDiff) -> tuple[PlaneDiff, PlaneDiff]:
    """``diff`` as the IPv4 device's part and the IPv6 device's part."""
    add4, add6 = _split(diff.add)
    remove4, remove6 = _split(diff.remove)
    return PlaneDiff(add4, remove4), PlaneDiff(add6, remove6)


def union_planes(v4: Plane, v6: Plane) -> Plane:
    """What the two devices hold, as one Plane."""
    if not v6:
        return v4
    return Plane(v4.neighs | v6.neighs, v4.fdbs | v6.fdbs, v4.routes | v6.routes, v4.direct | v6.direct)
