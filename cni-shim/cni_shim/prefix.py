"""IPv4/IPv6 ``address/length`` notation, parsed in plain Python (pure).

The shim needs four things from ``subnet.env``'s prefixes: the family, the network they name, the
address written before the slash, and whether one network lies inside another. ``ipaddress``
answers all of them but costs ~4 ms of imports (``functools``, ``collections``, ``re``) on every
container start, and even ``_socket.inet_pton`` costs a shared-library load (~0.3 ms;
docs/benchmarks.md). The notations accepted are inet_pton's, which ``ipaddress`` also accepts:
dotted quads without leading zeros, and IPv6 groups with at most one ``::`` and an optional
dotted quad at the end; tests/cni/test_prefix.py checks the two agree.
"""

from __future__ import annotations

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


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

        IPv6 compresses the longest run of zero groups (the first, on a tie), as RFC 5952 says
        and ``ipaddress`` does (glibc's ``inet_ntop`` would print ``::1:0`` as ``::0.1.0.0``).
        """
        if self.version == 4:
            return ".".join(str(byte) for byte in self.value.to_bytes(4, "big"))
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
    if ":" in address:
        version, value, bits = 6, _parse_ipv6(address), 128
    else:
        version, value, bits = 4, _parse_ipv4(address), 32
    if value is None:
        raise ValueError(f"{address!r} is not an IPv4 or IPv6 address")
    if not (length_text.isascii() and length_text.isdigit()) or not 0 <= int(length_text) <= bits:
        raise ValueError(f"length {length_text!r} is not 0..{bits}")
    return Prefix(version, value, int(length_text))


def _parse_ipv4(text: str) -> int | None:
    """A dotted quad's value, or None if it is not one (each byte 0-255, no leading zero)."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not (part.isascii() and part.isdigit() and len(part) <= 3) or (len(part) > 1 and part[0] == "0"):
            return None
        byte = int(part)
        if byte > 255:
            return None
        value = value << 8 | byte
    return value


def _parse_ipv6(text: str) -> int | None:
    """An IPv6 address's value, or None if it is not one."""
    if text.count("::") > 1:
        return None
    head_text, compressed, tail_text = text.partition("::")
    head = head_text.split(":") if head_text else []
    tail = tail_text.split(":") if tail_text else []
    last = tail if compressed else head
    if last and "." in last[-1]:  # a trailing dotted quad stands for the last two groups
        quad = _parse_ipv4(last[-1])
        if quad is None:
            return None
        last[-1:] = [f"{quad >> 16:x}", f"{quad & 0xFFFF:x}"]
    missing = 8 - len(head) - len(tail)
    if (missing < 1) if compressed else (missing != 0):
        return None
    value = 0
    for group in [*head, *(["0"] * missing), *tail]:
        if not 1 <= len(group) <= 4 or not _HEX_DIGITS.issuperset(group):
            return None
        value = value << 16 | int(group, 16)
    return value
