"""RtnlSocket.request against a real kernel: failures anywhere in a batch are reported."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address

import pytest
from nsutil import SPEC, in_netns

from overlayd.backend.plane import Neigh
from overlayd.backend.rtnl.codec import encode_entry
from overlayd.backend.rtnl.socket import BATCH, RtnlSocket
from overlayd.backend.vxlan.device import VxlanBackend

pytestmark = pytest.mark.root


def neighbour(n: int) -> Neigh:
    return Neigh(IPv4Address(0xC6120000 + 16 * n), f"0a:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}")


def write(bad: set[int], count: int) -> tuple[dict[int, int], list[int], int]:
    """``count`` requests: neighbour ``n`` added, or for ``n`` in ``bad`` deleted although absent
    (the kernel refuses: ENOENT); (errno by seq, the seqs, neighbours read back)."""
    backend = VxlanBackend()
    rtnl = RtnlSocket()
    try:
        state, _ = backend.ensure_device(SPEC)
        first = rtnl.next_seq(count)
        seqs = [first + n for n in range(count)]
        requests = [(seq, encode_entry(neighbour(n), state.ifindex, n not in bad, seq))
                    for n, seq in enumerate(seqs)]  # fmt: skip
        results = rtnl.request(requests)
        return results, seqs, len(backend.read_plane(state.ifindex).neighs)
    finally:
        rtnl.close()
        backend.close()


def test_failures_in_the_middle_and_at_the_end_of_batches_are_all_reported(netns: str) -> None:
    count = 2 * BATCH + 10
    # The first, a middle and the last request of a batch, the first of the next, the very last.
    bad = {0, BATCH // 2, BATCH - 1, BATCH, count - 1}
    results, seqs, programmed = in_netns(netns, write, bad, count)
    assert sorted(results) == seqs, "every request has a result"
    assert {n for n, seq in enumerate(seqs) if results[seq] == errno.ENOENT} == bad
    assert all(results[seq] == 0 for n, seq in enumerate(seqs) if n not in bad)
    assert programmed == count - len(bad)
