"""A run's results as table rows and as the Markdown of docs/benchmarks.md (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from overlayd.bench.cni import CniTimes
from overlayd.bench.control import ChangeTimes, ChurnTimes, ColdStart, EventTimes, IdleCost
from overlayd.bench.datapath import DataPath
from overlayd.bench.stats import Row, fmt_ratio, fmt_seconds, median, percentile, render_markdown_table

COLD_GOALS = {1000: "< 0.5 s", 5000: "< 2 s"}
BEGIN = "<!-- overlayd bench: begin (generated; edit outside these markers) -->"
END = "<!-- overlayd bench: end -->"


@dataclass
class Results:
    peers: int
    events: EventTimes
    churn: ChurnTimes
    idle: IdleCost
    cold: dict[int, list[ColdStart]] = field(default_factory=dict)
    floor: dict[int, list[float]] = field(default_factory=dict)
    cni: CniTimes | None = None
    tcp: list[DataPath] = field(default_factory=list)  # one per backend measured
    changes: ChangeTimes | None = None


def _p(values: list[float], p: float) -> str:
    return fmt_seconds(percentile(values, p))


def _gbit(bps: float) -> str:
    return f"{bps / 1e9:.2f} Gbit/s"


def rows(r: Results) -> list[Row]:
    """Every figure with its same-run baseline, ratio and the issue's goal."""
    out = []
    for n in sorted(r.cold):
        env = [c.subnet_env for c in r.cold[n]]
        done = [c.programmed for c in r.cold[n]]
        floor = median(r.floor[n])
        out.append(Row(f"cold start, {n} peers: subnet.env written (median)", fmt_seconds(median(env))))
        out.append(
            Row(
                f"cold start, {n} peers: all {3 * n} entries (median)",
                fmt_seconds(median(done)),
                f"ip -batch + bridge -batch {fmt_seconds(floor)}",
                fmt_ratio(median(done), floor),
                COLD_GOALS.get(n, "-"),
            )
        )
    ch = r.churn
    out.extend(event_rows(r.peers, r.events, r.changes))
    half = max(ch.sent_at, default=0) / 2
    early = [v for v, s in zip(ch.reaction, ch.sent_at, strict=True) if s < half]
    late = [v for v, s in zip(ch.reaction, ch.sent_at, strict=True) if s >= half]
    out.append(
        Row(
            f"churn {ch.offered_rate:.0f}/s (achieved {ch.achieved_rate:.0f}/s): p50 / p99",
            f"{_p(ch.reaction, 50)} / {_p(ch.reaction, 99)}",
            f"etcd put {_p(ch.put, 50)} / {_p(ch.put, 99)}",
            fmt_ratio(median(ch.reaction), median(ch.put)),
            "no backlog",
        )
    )
    out.append(
        Row(
            "churn: p99 first half / second half; backlog at last put; drain",
            f"{_p(early, 99)} / {_p(late, 99)}; {ch.backlog_at_end}; {fmt_seconds(ch.drain)}",
            goal="flat; 0",
        )
    )
    out.append(
        Row(
            f"idle CPU, {r.peers} peers, {r.idle.seconds:.0f} s",
            f"{r.idle.cpu_percent:.2f} % of a core",
            goal="< 0.5 %",
        )
    )
    out.append(Row(f"resident memory, {r.peers} peers", f"{r.idle.rss_mb:.1f} MB", goal="< 55 MB"))
    if r.cni:
        out.extend(cni_rows(r.cni))
    for path in r.tcp:
        out.extend(tcp_rows(path))
    return out


def event_rows(peers: int, ev: EventTimes, changes: ChangeTimes | None) -> list[Row]:
    """Lease events one at a time: additions, updates and removals apart, and the hold-down
    before a removal as a row of its own (the removals are timed from its end)."""
    out = [
        Row(
            f"event latency, {peers} peers, addition: put returned → route+neigh+fdb, p50 / p99",
            f"{_p(ev.reaction, 50)} / {_p(ev.reaction, 99)}",
            f"etcd put {_p(ev.put, 50)} / {_p(ev.put, 99)}",
            fmt_ratio(median(ev.reaction), median(ev.put)),
            "p99 < 2 ms",
        )
    ]
    if changes is None:
        return out
    return [
        *out,
        Row(
            f"event latency, {peers} peers, update (new MAC, new PublicIP): put returned → entries, "
            "p50 / p99",
            f"{_p(changes.updates, 50)} / {_p(changes.updates, 99)}",
            goal="p99 < 2 ms",
        ),
        Row(
            f"event latency, {peers} peers, removal: hold-down's end → entries gone, p50 / p99",
            f"{_p(changes.removals, 50)} / {_p(changes.removals, 99)}",
            goal="p99 < 2 ms",
        ),
        Row(
            f"hold-down ({changes.hold_down:g} s): delete returned → entries gone, p50 / max",
            f"{_p(changes.held, 50)} / {_p(changes.held, 100)}",
            goal="≤ 1 s + removal",
        ),
    ]


def tcp_rows(path: DataPath) -> list[Row]:
    """Best of each kind, and the ratio within each round's pair (the two runs next to each other
    saw the most similar machine noise), as a median and a range; for one backend."""
    tcp = path.tcp
    over, under = max(tcp.containers), max(tcp.hosts)
    paired = [c / h for c, h in zip(tcp.containers, tcp.hosts, strict=True)]  # tcp_rate: h > 0
    return [
        Row(
            f"TCP across hosts, {path.backend}: container → container (MTU {path.mtu}, "
            f"{path.device + ', ' if path.device else ''}best of {len(tcp.hosts)})",
            _gbit(over),
            f"host → host {_gbit(under)}",
            f"{over / under:.2f}",
            path.goal,
        ),
        Row(
            f"TCP, {path.backend}: container / host ratio of each round's pair, median (range), "
            f"{len(paired)} rounds",
            f"{median(paired):.2f} ({min(paired):.2f} to {max(paired):.2f})",
        ),
    ]


CNI_OWN_GOAL = "≤ 3 ms"


def cni_rows(cni: CniTimes) -> list[Row]:
    """ADD and DEL through the shim beside bridge alone, and the shim's own work above the floor.

    Own work = p50(shim + bridge) - p50(bridge alone) - p50(``python -IS -c pass``), all from
    the same run. That floor includes the interpreter's teardown, which the shim skips (it
    leaves with ``_exit``); the figure over the start alone is shown next to it. The same with a
    stub delegate instead of bridge follows, without bridge's variance.
    """
    floor_pass, floor_start = median(cni.floor_pass), median(cni.floor_start)
    out = []
    for command, shim_times, bridge_times, stub_shim_times, stub_times in (
        ("ADD", cni.shim_add, cni.bridge_add, cni.stub_shim_add, cni.stub_add),
        ("DEL", cni.shim_del, cni.bridge_del, cni.stub_shim_del, cni.stub_del),
    ):
        shim, alone = median(shim_times), median(bridge_times)
        out.append(
            Row(
                f"CNI {command} p50: shim + bridge",
                fmt_seconds(shim),
                f"bridge alone {fmt_seconds(alone)}",
                fmt_ratio(shim, alone),
            )
        )
        out.append(
            Row(
                f"CNI {command} p50: shim's own work (shim - bridge - `python -IS -c pass`)",
                fmt_seconds(shim - alone - floor_pass),
                f"`-c pass` {fmt_seconds(floor_pass)}; over the start alone "
                f"({fmt_seconds(floor_start)}): {fmt_seconds(shim - alone - floor_start)}",
                goal=CNI_OWN_GOAL,
            )
        )
        stub_shim, stub = median(stub_shim_times), median(stub_times)
        out.append(
            Row(
                f"CNI {command} p50: the same with a stub delegate (shim + stub - stub - `-c pass`)",
                fmt_seconds(stub_shim - stub - floor_pass),
                f"stub alone {fmt_seconds(stub)}; over the start alone: "
                f"{fmt_seconds(stub_shim - stub - floor_start)}",
                goal=CNI_OWN_GOAL,
            )
        )
    return out


def markdown(r: Results, command: str, when: str, machine: str, commit: str, image: str | None) -> str:
    """The generated part of docs/benchmarks.md."""
    lines = [
        BEGIN,
        "## Latest run",
        "",
        f"`{command}` on {when}, commit {commit}; {machine}. Every baseline is measured in the same run,",
        "on the same machine, interleaved or next to its figure; no figure is asserted anywhere.",
        "",
        render_markdown_table(rows(r)),
        "",
    ]
    if image:
        lines += [f"![event latency and cold start versus peer count]({image})", ""]
    lines += [
        "Cold start per peer count (seconds, every run):",
        "",
        "| peers | subnet.env written | all entries | ip -batch + bridge -batch |",
        "| --- | --- | --- | --- |",
    ]
    for n in sorted(r.cold):
        lines.append(
            f"| {n} | {', '.join(f'{c.subnet_env:.3f}' for c in r.cold[n])} "
            f"| {', '.join(f'{c.programmed:.3f}' for c in r.cold[n])} "
            f"| {', '.join(f'{t:.3f}' for t in r.floor[n])} |"
        )
    ev = r.events
    lines += [
        "",
        f"Events one at a time: {len(ev.reaction)} measured, {ev.missed} not seen within 10 s; "
        f"p90 {_p(ev.reaction, 90)}, max {_p(ev.reaction, 100)}. Churn: {len(r.churn.put)} puts, "
        f"{r.churn.missed} not programmed within 30 s. "
        + (f"Updates and removals: {len(r.changes.updates)} and {len(r.changes.held)} measured, "
           f"{r.changes.missed} not seen within 10 s (after the hold-down). " if r.changes else "")
        + f"The netlink reader that timestamps the "
        f"entries ran {'at SCHED_FIFO' if ev.realtime_observer else 'at normal priority (no SCHED_FIFO)'}.",
        END,
    ]
    return "\n".join(lines) + "\n"


def splice(document: str, generated: str) -> str:
    """``document`` with the text between the markers replaced by ``generated`` (appended if absent)."""
    if BEGIN in document and END in document:
        head, _, rest = document.partition(BEGIN)
        return head + generated.rstrip("\n") + rest.partition(END)[2]
    return document.rstrip("\n") + "\n\n" + generated
