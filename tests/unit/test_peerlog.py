"""Which peer changes get a log line of their own, and the summary of a flood."""

from __future__ import annotations

from overlayd.agent.peerlog import PeerChange, PeerLogBudget, Summary


def test_a_few_changes_are_each_logged_and_need_no_summary() -> None:
    budget = PeerLogBudget(burst=10, rate=2, interval=10)
    assert all(budget.admit(PeerChange.ADDED, 100 + i * 0.6) for i in range(30))  # under 2 a second
    assert budget.summary(1000.0) is None and budget.timeout(1000.0) is None


def test_a_flood_logs_its_first_lines_then_a_few_a_second_then_one_summary() -> None:
    budget = PeerLogBudget(burst=10, rate=2, interval=10)
    kinds = [PeerChange.ADDED, PeerChange.REMOVED, PeerChange.CHANGED, PeerChange.ADDED]
    admitted = [budget.admit(kinds[i % 4], 100 + i / 2000) for i in range(20000)]  # 2000 a second
    assert admitted[:10] == [True] * 10 and not any(admitted[10:100])
    assert 10 + 18 <= sum(admitted) <= 10 + 21  # the burst, then ~2 a second over 10 s
    assert budget.timeout(105.0) is not None and budget.summary(105.0) is None  # not yet
    summary = budget.summary(110.1)
    assert summary is not None and summary.seconds >= 10
    assert sum(summary.counts.values()) == 20000 - sum(admitted)
    assert summary.counts[PeerChange.ADDED] > summary.counts[PeerChange.REMOVED] > 0
    assert budget.summary(200.0) is None  # summed up once


def test_after_a_quiet_spell_a_new_burst_is_logged_one_by_one_again() -> None:
    budget = PeerLogBudget(burst=5, rate=1, interval=10)
    for i in range(100):
        budget.admit(PeerChange.ADDED, 100 + i / 1000)
    assert budget.summary(111.0) is not None
    assert all(budget.admit(PeerChange.REMOVED, 200 + i / 1000) for i in range(5))


def test_the_summary_line_names_every_kind_and_the_total() -> None:
    line = Summary({PeerChange.ADDED: 1850, PeerChange.REMOVED: 12}, 10.0).line()
    assert line == (
        "1862 more peer changes in the last 10 s, not logged one by one: "
        "1850 added, 0 changed, 12 removed, 0 returned"
    )
