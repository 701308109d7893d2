"""The probe schedule: the budget holds at any cluster size, a lost probe's peer is probed again
soon, hysteresis turns a peer unreachable after 3 losses and reachable on one answer; a dual-stack
peer's two families are probed and judged apart, within the one budget."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from overlayd.agent.reach import Family, ProbeBudget, ProbeSchedule, Reach

Address = IPv4Address | IPv6Address


def targets(count: int) -> dict[str, tuple[Address, ...]]:
    return {f"198.18.{i // 256}.{i % 256}-32": (IPv4Address(0xC6120000 + i),) for i in range(count)}


def dual_targets(count: int) -> dict[str, tuple[Address, ...]]:
    """``count`` dual-stack peers: each an IPv4 and an IPv6 address."""
    return {key: (v4, IPv6Address("2001:db8:1000::") + (index << 64))
            for index, (key, (v4,)) in enumerate(targets(count).items())}  # fmt: skip


def run(schedule: ProbeSchedule, seconds: float, step: float = 0.05) -> list[str]:
    sent, now = [], 0.0
    while now < seconds:
        sent += [key for key, _ in schedule.due(now)]
        now += step
    return sent


def test_5000_peers_cost_the_budget_not_more_and_each_is_probed_once_a_cycle() -> None:
    budget = ProbeBudget(rate=20)
    schedule = ProbeSchedule(budget)
    schedule.set_targets(targets(5000), 0.0, 0.0)
    assert budget.period(5000) == 250.0
    sent = run(schedule, 250.0)
    assert 4900 <= len(sent) <= 20 * 250 + 20  # the budget, whatever the cluster's size
    assert len(set(sent)) == len(sent), "nobody probed twice in one cycle"


def test_small_clusters_are_probed_every_min_period() -> None:
    schedule = ProbeSchedule(ProbeBudget(rate=20, min_period=5))
    schedule.set_targets(targets(3), 0.0, 0.0)
    sent = run(schedule, 20.0)
    assert 3 * 4 <= len(sent) <= 3 * 5


def test_three_losses_make_a_peer_unreachable_one_answer_brings_it_back() -> None:
    budget = ProbeBudget(rate=20, retry=2, misses=3)
    schedule = ProbeSchedule(budget)
    peers = targets(2)
    key, other = sorted(peers)
    schedule.set_targets(peers, 0.0, 100.0)
    assert schedule.lost(key, peers[key][0], 1.0, 101.0) is None
    assert schedule.peers[key].paths[0].due <= 3.0, "a lost probe's peer is probed again soon"
    assert schedule.lost(key, peers[key][0], 3.0, 103.0) is None
    turned = schedule.lost(key, peers[key][0], 5.0, 105.0)
    assert turned is not None and turned.state is Reach.UNREACHABLE and turned.misses == 3
    assert schedule.lost(key, peers[key][0], 7.0, 107.0) is None, "reported once"
    assert schedule.unreachable() == [key]
    back = schedule.answered(key, peers[key][0], 0.002, 110.0)
    assert back is not None and back.state is Reach.REACHABLE
    assert schedule.answered(other, peers[other][0], 0.001, 110.0) is None, "a first answer is no news"
    view = {peer.key: peer for peer in schedule.snapshot()}
    assert view[key].state is Reach.REACHABLE and view[key].since == 110.0 and view[key].rtt == 0.002


def test_an_answer_from_a_replaced_address_or_a_gone_peer_counts_for_nothing() -> None:
    schedule = ProbeSchedule(ProbeBudget())
    peers = targets(1)
    [key] = peers
    schedule.set_targets(peers, 0.0, 0.0)
    schedule.set_targets({key: (IPv4Address("198.18.9.0"),)}, 1.0, 1.0)
    assert schedule.answered(key, peers[key][0], 0.001, 2.0) is None
    assert schedule.peers[key].paths[0].state is Reach.UNKNOWN
    schedule.set_targets({}, 2.0, 2.0)
    assert schedule.lost(key, IPv4Address("198.18.9.0"), 3.0, 3.0) is None
    assert schedule.snapshot() == ()


def test_an_outage_of_every_peer_stays_within_the_budget() -> None:
    budget = ProbeBudget(rate=20, retry=2)
    schedule = ProbeSchedule(budget)
    peers = targets(1000)
    schedule.set_targets(peers, 0.0, 0.0)
    sent, now = 0, 0.0
    while now < 60.0:
        due = schedule.due(now)
        sent += len(due)
        for key, target in due:
            schedule.lost(key, target, now, now)
        now += 0.05
    assert sent <= 20 * 60 + 20


def test_dual_stack_peers_share_the_budget_and_each_family_is_probed_once_a_cycle() -> None:
    budget = ProbeBudget(rate=20)
    schedule = ProbeSchedule(budget)
    schedule.set_targets(dual_targets(1000), 0.0, 0.0)
    assert schedule.path_count == 2000 and budget.period(2000) == 100.0
    sent, now = [], 0.0
    while now < 100.0:
        sent += schedule.due(now)
        now += 0.05
    assert 1950 <= len(sent) <= 20 * 100 + 20, "two families, one budget"
    assert len(set(sent)) == len(sent), "no address probed twice in one cycle"
    assert {target.version for _, target in sent} == {4, 6}


def lose(schedule: ProbeSchedule, key: str, target: Address, start: float) -> list:
    """Three lost probes of ``target``, 2 s apart: the transitions they make."""
    found = [schedule.lost(key, target, start + 2 * i, 100 + start + 2 * i) for i in range(3)]
    return [turn for turn in found if turn is not None]


def test_a_lost_ipv6_path_makes_its_peer_unreachable_and_names_the_family() -> None:
    schedule = ProbeSchedule(ProbeBudget(rate=20, retry=2, misses=3))
    peers = dual_targets(2)
    key, other = sorted(peers)
    v4, v6 = peers[key]
    schedule.set_targets(peers, 0.0, 100.0)
    assert schedule.answered(key, v4, 0.001, 100.5) is None
    [turned] = lose(schedule, key, v6, 1.0)
    assert turned.state is Reach.UNREACHABLE and turned.family is Family.IPV6 and turned.target == v6
    assert schedule.unreachable() == [key] and schedule.unreachable_count == 1
    assert schedule.unreachable_paths == {Family.IPV4: 0, Family.IPV6: 1}
    assert schedule.peers[key].paths[0].state is Reach.REACHABLE, "IPv4 still answers"
    view = {peer.key: peer for peer in schedule.snapshot()}
    peer = view[key]
    assert peer.state is Reach.UNREACHABLE and peer.failing == (Family.IPV6,)
    assert peer.target == str(v6) and peer.misses == 3, "the peer's line is its failing path's"
    paths = [(p.family, p.state) for p in peer.paths]
    assert paths == [(Family.IPV4, Reach.REACHABLE), (Family.IPV6, Reach.UNREACHABLE)]
    assert view[other].failing == () and view[other].state is Reach.UNKNOWN
    # The IPv4 path failing too leaves one unreachable peer, with two failing families.
    lose(schedule, key, v4, 10.0)
    assert schedule.unreachable_count == 1 and schedule.unreachable_paths == {Family.IPV4: 1, Family.IPV6: 1}
    back = schedule.answered(key, v6, 0.002, 120.0)
    assert back is not None and back.state is Reach.REACHABLE and back.family is Family.IPV6
    assert schedule.unreachable_count == 1, "still unreachable over IPv4"
    assert {p.key: p.failing for p in schedule.snapshot()}[key] == (Family.IPV4,)
    assert schedule.answered(key, v4, 0.002, 121.0) is not None
    assert schedule.unreachable_count == 0 and schedule.unreachable() == []


def test_a_network_turned_dual_stack_keeps_the_ipv4_verdicts_and_probes_the_new_family_soon() -> None:
    schedule = ProbeSchedule(ProbeBudget(rate=20, retry=2, misses=3))
    single, dual = targets(3), dual_targets(3)
    key = sorted(single)[0]
    schedule.set_targets(single, 0.0, 100.0)
    schedule.due(0.0)  # the budget fills from the first turn on
    lose(schedule, key, single[key][0], 1.0)
    assert schedule.unreachable_count == 1
    schedule.set_targets(dual, 10.0, 110.0)
    assert schedule.unreachable_count == 1 and schedule.unreachable_paths[Family.IPV4] == 1, "history kept"
    assert schedule.path_count == 6
    due = {target for _, target in schedule.due(10.0)}
    assert {addresses[1] for addresses in dual.values()} <= due, "the new IPv6 paths are probed at once"
    schedule.set_targets(single, 20.0, 120.0)
    assert schedule.path_count == 3 and schedule.unreachable_count == 1
    schedule.set_targets({}, 30.0, 130.0)
    assert schedule.unreachable_count == 0 and schedule.unreachable_paths == dict.fromkeys(Family, 0)


def test_an_ipv6_only_peer_is_probed_on_its_ipv6_address_alone() -> None:
    schedule = ProbeSchedule(ProbeBudget(rate=20, misses=3))
    target = IPv6Address("2001:db8:1000:2e::")
    schedule.set_targets({"0.0.0.0-0&2001:db8:1000:2e::-64": (target,)}, 0.0, 0.0)
    schedule.due(0.0)
    assert schedule.due(5.0) == [("0.0.0.0-0&2001:db8:1000:2e::-64", target)]
    [turned] = lose(schedule, "0.0.0.0-0&2001:db8:1000:2e::-64", target, 6.0)
    assert turned.family is Family.IPV6 and schedule.snapshot()[0].failing == (Family.IPV6,)
