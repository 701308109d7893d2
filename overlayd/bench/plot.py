"""The benchmark's figure (PNG): event latency distribution, latency during churn, cold start vs peers.

matplotlib is optional (``pip install -e '.[bench]'``); without it the run prints the hint and
writes no image.
"""

from __future__ import annotations

from pathlib import Path

from overlayd.bench.report import Results

INSTALL_HINT = "pip install -e '.[bench]'"


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def render_plot(results: Results, path: Path) -> None:
    """Three panels side by side, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, churn, cold) = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, values in (
        ("one at a time: put returned → entries", results.events.reaction),
        ("one at a time: the etcd put", results.events.put),
        (f"churn {results.churn.offered_rate:.0f}/s: put returned → entries", results.churn.reaction),
    ):
        ms = sorted(v * 1000 for v in values)
        cdf.plot(ms, [(k + 1) / len(ms) for k in range(len(ms))], label=label)
    cdf.set_xscale("log")
    cdf.set_xlabel("ms")
    cdf.set_ylabel("fraction of events")
    cdf.set_title(f"Event latency at {results.peers} peers (CDF)")
    cdf.legend(fontsize=8)

    churn.scatter(results.churn.sent_at, [v * 1000 for v in results.churn.reaction], s=4)
    churn.set_xlabel("s since the first put")
    churn.set_ylabel("put returned → entries (ms)")
    churn.set_title(f"Latency during churn ({results.churn.offered_rate:.0f} lease changes/s)")

    sizes = sorted(results.cold)
    for label, pick in (
        ("agent: all entries programmed", lambda n: [c.programmed for c in results.cold[n]]),
        ("agent: subnet.env written", lambda n: [c.subnet_env for c in results.cold[n]]),
        ("ip -batch + bridge -batch (floor)", lambda n: results.floor[n]),
    ):
        cold.plot(sizes, [min(pick(n)) for n in sizes], marker="o", label=label)
    cold.set_xscale("log")
    cold.set_yscale("log")
    cold.set_xlabel("peer leases")
    cold.set_ylabel("s (best of runs)")
    cold.set_title("Cold start vs peer count")
    cold.legend(fontsize=8)

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
