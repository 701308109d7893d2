"""A field of an encapsulation header by which one network's underlay packets differ from another's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeaderField:
    """``length`` bits at bit ``offset`` from the start of the transport (UDP) header hold ``value``:
    VXLAN's VNI is 24 bits at 96 (the 8-byte UDP header, then flags and reserved bytes).

    Two networks' agents on one host may share a port (VXLAN's 8472); each allowlist then judges
    only its own network's packets, told apart by this field, and leaves the other's to its agent.
    """

    offset: int
    length: int
    value: int

    def nft(self) -> str:
        """The match as ``nft list`` prints it: ``@th,96,24 0x1``."""
        return f"@th,{self.offset},{self.length} {self.value:#x}"
