"""IPv4/IPv6 ``address/length`` notation, parsed with the C library (pure).

The shim needs four things from ``subnet.env``'s prefixes: the family, the network they name, the
address written before the slash, and whether one network lies inside another. ``ipaddress``
answers all of them but costs ~4 ms of imports (``functools``, ``collections``, ``re``) on every
container start (docs/benchmarks.md); ``_socket.inet_pton``/``inet_ntop`` parse and print the
same notations (``socket`` itself would import ``enum`` and ``selectors``).
"""

from __future__ import annotations

import _socket

_FAMILIES = ((4, _socket.AF_INET, 32), (6, _socket.AF_INET6, 128))


class Prefix:
    """An address with a prefix length, e.g. ``198.18.5.1/24``; ``network`` clears the host bits."""

    def __init__(self, version: int, value: int, length: int) -> None:
        self.version = version
        self.value = value
        self.length = length

    @property
    def bits(self) -> int:
        return 32 if self.version == 4 else 128

    @property
    def network(self) -> Prefix:
        host_mask = (1 << (self.bits - self.length)) - 1
        return Prefix(self.version, self.value & ~host_mask, self.length)

    @property
    def ip(self) -> str:
        """The address alone, in RFC 5952 notation (as ``ipaddress`` prints it).

        IPv6 is formatted here because glibc's ``inet_ntop`` prints ``::1:0`` as ``::0.1.0.0``.
        """
        if self.version == 4:
            return _socket.inet_ntop(_socket.AF_INET, self.value.to_bytes(4, "big"))
        groups = [f"{(self.value >> shift) & 0xFFFF:x}" for shift in range(112, -16, -16)]
        best_start, best_len, start = -1, 1, -1  # the longest run of two or more zero groups
        for index, group in enumerate([*groups, "end"]):
            if group == "0":
                start = index if start < 0 else start
                continue
            if start >= 0 and index - start > best_len:
                best_start, best_len = start, index - start
            start = -1
        if best_start < 0:
            return ":".join(groups)
        head, tail = groups[:best_start], groups[best_start + best_len :]
        return ":".join(head) + "::" + ":".join(tail)

    def with_value(self, value: int) -> Prefix:
        return Prefix(self.version, value, self.length)

    def inside(self, other: Prefix) -> bool:
        """True when every address of this network is in ``other``'s network."""
        shift = self.bits - other.length
        return (
            self.version == other.version
            and self.length >= other.length
            and self.value >> shift == other.value >> shift
        )

    def __str__(self) -> str:
        return f"{self.ip}/{self.length}"


def parse_prefix(text: str) -> Prefix:
    """Parse ``address/length`` (IPv4 or IPv6); ValueError says what is wrong with ``text``."""
    address, slash, length_text = text.partition("/")
    if not slash:
        raise ValueError("no /length")
    for version, family, bits in _FAMILIES:
        try:
            packed = _socket.inet_pton(family, address)
        except OSError:
            continue
        if not (length_text.isascii() and length_text.isdigit()) or not 0 <= int(length_text) <= bits:
            raise ValueError(f"length {length_text!r} is not 0..{bits}")
        return Prefix(version, int.from_bytes(packed, "big"), int(length_text))
    raise ValueError(f"{address!r} is not an IPv4 or IPv6 address")
