"""What a VXLAN lease publishes: ``BackendData`` ``{"VNI": <vni>, "VtepMAC": <mac>}``, both ways.

flanneld reads and writes the same object, so either agent programs the other's host.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

from overlayd.backend.vxlan.config import TYPE, VxlanConfig
from overlayd.subnet.lease import LeaseAttrs, LeaseError, canonical_mac, lease_vni


class VxlanLeaseData:
    """The ``BackendDataCodec`` of vxlan leases (``overlayd.subnet.lease`` calls it)."""

    def encode(self, attrs: LeaseAttrs) -> dict[str, object] | None:
        return {"VNI": attrs.vni, "VtepMAC": attrs.vtep_mac}

    def decode(self, key: str, data: Mapping[str, object]) -> dict[str, object]:
        vni = data.get("VNI")
        mac = canonical_mac(str(data.get("VtepMAC") or "").lower())
        if type(vni) is not int or mac is None:
            raise LeaseError(
                f"lease {key}: vxlan BackendData needs an integer VNI and a VtepMAC", "bad_backend_data"
            )
        return {"vni": vni, "vtep_mac": mac}


def vxlan_lease_attrs(config: VxlanConfig, public_ip: IPv4Address, vtep_mac: str) -> LeaseAttrs:
    """What this host publishes: its PublicIP, the VNI as leases carry it, and its VTEP MAC."""
    return LeaseAttrs(public_ip=public_ip, backend_type=TYPE, vni=lease_vni(config.vni), vtep_mac=vtep_mac)
