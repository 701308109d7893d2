"""Which dropped VXLAN sources the agent names, and how often."""

from ipaddress import IPv4Address

from overlayd.dropnotice import FORMER_PEER_GRACE, MAX_NAMED, DropNotice, warning

A, B, C = (IPv4Address(f"192.0.2.{n}") for n in (50, 51, 52))


def test_a_source_is_named_once_while_the_kernel_keeps_it() -> None:
    notice = DropNotice()
    assert notice.update(frozenset({B, A}), frozenset(), 0.0) == [A, B]
    assert notice.update(frozenset({A, B}), frozenset(), 10.0) == []
    assert notice.update(frozenset({A, B, C}), frozenset(), 20.0) == [C]


def test_a_source_that_aged_out_and_returns_is_named_again() -> None:
    notice = DropNotice()
    assert notice.update(frozenset({A}), frozenset(), 0.0) == [A]
    assert notice.update(frozenset(), frozenset(), 700.0) == []
    assert notice.update(frozenset({A}), frozenset(), 710.0) == [A]


def test_current_peers_are_not_named() -> None:
    # A new peer's first packet can arrive before its lease: dropped, but nothing to fix.
    assert DropNotice().update(frozenset({A, B}), frozenset({A}), 0.0) == [B]


def test_a_former_peer_is_excused_for_the_grace_period_only() -> None:
    notice = DropNotice()
    assert notice.update(frozenset(), frozenset({A}), 0.0) == []
    assert notice.update(frozenset({A}), frozenset(), 5.0) == [], "its last packets after the lease went"
    assert notice.update(frozenset(), frozenset(), 6.0) == []
    assert notice.update(frozenset({A}), frozenset(), 5.0 + FORMER_PEER_GRACE) == [A]


def test_a_peer_that_returns_is_no_longer_a_former_peer() -> None:
    notice = DropNotice()
    notice.update(frozenset(), frozenset({A}), 0.0)
    notice.update(frozenset(), frozenset(), 1.0)
    notice.update(frozenset(), frozenset({A}), 2.0)
    assert A not in notice.former_peers


def test_warning_names_the_sources_the_port_and_both_fixes() -> None:
    text = warning([A, B], 8472)
    assert "192.0.2.50, 192.0.2.51" in text and "UDP port 8472" in text
    assert "--public-ip" in text and "--vxlan-ingress-allowlist=false" in text


def test_warning_names_at_most_a_few_sources() -> None:
    many = [IPv4Address(f"192.0.2.{n}") for n in range(100, 100 + MAX_NAMED + 5)]
    text = warning(many, 4789)
    assert str(many[MAX_NAMED - 1]) in text and str(many[MAX_NAMED]) not in text
    assert "and 5 more" in text
