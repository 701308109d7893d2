"""A dual-stack VXLAN host's two devices read as one plane.

The entries of both families go through the same desired state and diff (``backend.desired``);
each is written to the device of its address's family (``device.VxlanBackend.apply``) and the
two devices' entries are read back together here.
"""

from __future__ import annotations

from overlayd.backend.plane import Plane


def union_planes(v4: Plane, v6: Plane) -> Plane:
    """What the two devices hold, as one Plane."""
    if not v6:
        return v4
    return Plane(v4.neighs | v6.neighs, v4.fdbs | v6.fdbs, v4.routes | v6.routes, v4.direct | v6.direct)
