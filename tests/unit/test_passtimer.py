"""PassTimer: the timer's full pass is due every interval, waits for a pause in peer events, and
never waits more than one interval. EntryDumps: which passes dump every entry."""

from __future__ import annotations

from overlayd.agent.passtimer import EntryDumps, PassTimer


def run(timer: PassTimer, until: float, event_every: float | None, step: float = 0.01) -> list[float]:
    """Drive the timer as the agent's loop does; the times at which the pass ran."""
    passes, next_event = [], 0.0
    for i in range(int(until / step)):
        now = i * step
        events = event_every is not None and now >= next_event
        if events:
            next_event = now + event_every  # type: ignore[operator]
        timer.ticked(now)
        if timer.run_pass(now, events, other_pass=False):
            passes.append(round(now, 1))
    return passes


def test_without_events_the_pass_runs_every_interval() -> None:
    assert run(PassTimer(10.0, now=0.0), until=35.0, event_every=None) == [10.0, 20.0, 30.0]


def test_a_due_pass_waits_for_a_pause_in_events() -> None:
    timer = PassTimer(10.0, now=0.0, pause=0.1)
    assert timer.ticked(10.0)
    assert not timer.run_pass(10.0, peer_events=True, other_pass=False)
    assert not timer.run_pass(10.05, peer_events=False, other_pass=False), "only 50 ms since the event"
    assert timer.timeout(10.05) == 0.1, "the loop wakes soon to look for the pause"
    assert timer.run_pass(10.15, peer_events=False, other_pass=False)
    assert timer.timeout(10.15) > 9.0, "discharged: back to the interval"


def test_under_constant_events_it_still_runs_within_two_intervals() -> None:
    passes = run(PassTimer(10.0, now=0.0), until=45.0, event_every=0.05)
    assert passes == [20.0, 40.0]


def test_any_other_full_pass_discharges_it() -> None:
    timer = PassTimer(10.0, now=0.0)
    timer.ticked(10.0)
    assert timer.run_pass(10.0, peer_events=True, other_pass=True)
    assert not timer.run_pass(10.5, peer_events=False, other_pass=False), "nothing owed any more"


def test_lease_and_config_checks_tick_on_time_while_the_pass_waits() -> None:
    timer, ticks = PassTimer(10.0, now=0.0), []
    for step in range(3100):
        now = step / 100
        if timer.ticked(now):
            ticks.append(now)
        timer.run_pass(now, peer_events=True, other_pass=False)  # events all along
    assert ticks == [10.0, 20.0, 30.0]


def test_timer_passes_dump_every_sixth_time_while_the_monitor_runs() -> None:
    dumps = EntryDumps(every=6)
    assert [dumps.due(timer=True, monitored=True) for _ in range(12)] == ([False] * 5 + [True]) * 2


def test_every_other_pass_dumps_and_restarts_the_count() -> None:
    dumps = EntryDumps(every=3)
    assert not dumps.due(timer=True, monitored=True)
    assert dumps.due(timer=False, monitored=True)  # a netlink, event or re-list pass
    assert [dumps.due(timer=True, monitored=True) for _ in range(3)] == [False, False, True]


def test_without_the_monitor_every_timer_pass_dumps() -> None:
    dumps = EntryDumps(every=6)
    assert all(dumps.due(timer=True, monitored=False) for _ in range(4))
