"""The probe schedule: the budget holds at any cluster size, a lost probe's peer is probed again
soon, hysteresis turns a peer unreachable after 3 losses and reachable on one answer."""

from __future__ import annotations

from ipaddress import IPv4Address

from overlayd.agent.reach import ProbeBudget, ProbeSchedule, Reach


def targets(count: int) -> dict[str, IPv4Address]:
    return {f"198.18.{i // 256}.{i % 256}-32": IPv4Address(0xC6120000 + i) for i in range(count)}


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
    assert schedule.lost(key, peers[key], 1.0, 101.0) is None
    assert schedule.peers[key].due <= 3.0, "a lost probe's peer is probed again soon"
    assert schedule.lost(key, peers[key], 3.0, 103.0) is None
    turned = schedule.lost(key, peers[key], 5.0, 105.0)
    assert turned is not None and turned.state is Reach.UNREACHABLE and turned.misses == 3
    assert schedule.lost(key, peers[key], 7.0, 107.0) is None, "reported once"
    assert schedule.unreachable() == [key]
    back = schedule.answered(key, peers[key], 0.002, 110.0)
    assert back is not None and back.state is Reach.REACHABLE
    assert schedule.answered(other, peers[other], 0.001, 110.0) is None, "a first answer is no news"
    view = {peer.key: peer for peer in schedule.snapshot()}
    assert view[key].state is Reach.REACHABLE and view[key].since == 110.0 and view[key].rtt == 0.002


def test_an_answer_from_a_replaced_address_or_a_gone_peer_counts_for_nothing() -> None:
    schedule = ProbeSchedule(ProbeBudget())
    peers = targets(1)
    [key] = peers
    schedule.set_targets(peers, 0.0, 0.0)
    schedule.set_targets({key: IPv4Address("198.18.9.0")}, 1.0, 1.0)
    assert schedule.answered(key, peers[key], 0.001, 2.0) is None
    assert schedule.peers[key].state is Reach.UNKNOWN
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
