"""Which dropped VXLAN sources the agent names, and how often."""

from ipaddress import IPv4Address

from overlayd.netfilter.dropnotice import FORMER_PEER_GRACE, MAX_NAMED, DropNotice, warning

A, B, C = (IPv4Address(f"192.0.2.{n}") for n in (50, 51, 52))


NONE: tuple[list[IPv4Address], int] = ([], 0)


def test_a_source_is_named_once_while_the_kernel_keeps_it() -> None:
    notice = DropNotice()
    assert notice.update(frozenset({B, A}), frozenset(), 0.0) == ([A, B], 0)
    assert notice.update(frozenset({A, B}), frozenset(), 10.0) == NONE
    assert notice.update(frozenset({A, B, C}), frozenset(), 20.0) == ([C], 0)


def test_a_source_that_aged_out_and_returns_is_named_again() -> None:
    notice = DropNotice()
    assert notice.update(frozenset({A}), frozenset(), 0.0) == ([A], 0)
    assert notice.update(frozenset(), frozenset(), 700.0) == NONE
    assert notice.update(frozenset({A}), frozenset(), 710.0) == ([A], 0)


def test_current_peers_are_neither_named_nor_counted() -> None:
    # A new peer's first packet can arrive before its lease: dropped, but nothing to fix.
    notice = DropNotice()
    assert notice.update(frozenset({A, B}), frozenset({A}), 0.0) == ([B], 0)
    assert notice.unexplained(frozenset({A, B})) == {B}


def test_a_former_peer_is_excused_for_the_grace_period_only() -> None:
    notice = DropNotice()
    assert notice.update(frozenset(), frozenset({A}), 0.0) == NONE
    assert notice.update(frozenset({A}), frozenset(), 5.0) == NONE, "its last packets after the lease went"
    assert notice.unexplained(frozenset({A})) == set(), "the gauge agrees with the log"
    assert notice.update(frozenset(), frozenset(), 6.0) == NONE
    assert notice.update(frozenset({A}), frozenset(), 5.0 + FORMER_PEER_GRACE) == ([A], 0)


def test_a_peer_that_returns_is_no_longer_a_former_peer() -> None:
    notice = DropNotice()
    notice.update(frozenset(), frozenset({A}), 0.0)
    notice.update(frozenset(), frozenset(), 1.0)
    notice.update(frozenset(), frozenset({A}), 2.0)
    assert A not in notice.former_peers


def test_warning_names_the_sources_the_port_and_both_fixes() -> None:
    text = warning([A, B], 0, 8472)
    assert "192.0.2.50, 192.0.2.51:" in text and "UDP port 8472" in text
    assert "--public-ip" in text and "--vxlan-ingress-allowlist=false" in text


def test_a_few_sources_per_pass_and_every_one_named_in_the_end() -> None:
    """A flood of sources must not make one giant line, nor leave any source unnamed."""
    many = frozenset(IPv4Address(f"192.0.2.{n}") for n in range(100, 100 + MAX_NAMED + 5))
    notice = DropNotice()
    first, more = notice.update(many, frozenset(), 0.0)
    assert (len(first), more) == (MAX_NAMED, 5)
    assert "(and 5 more, named on the next passes)" in warning(first, more, 4789)
    second, more = notice.update(many, frozenset(), 10.0)
    assert (len(second), more) == (5, 0)
    assert set(first) | set(second) == many
    assert notice.update(many, frozenset(), 20.0) == NONE
