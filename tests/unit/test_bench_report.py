"""The benchmark's pure parts: percentiles, formatting, the table and splicing the generated report."""

from __future__ import annotations

import math

from overlayd.bench.datapath import DataPath, Throughput, device_made
from overlayd.bench.report import BEGIN, END, splice, tcp_rows
from overlayd.bench.stats import Row, fmt_ratio, fmt_seconds, percentile, render_markdown_table, render_table


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert math.isnan(percentile([], 50))


def test_seconds_and_ratios_are_formatted_for_reading() -> None:
    assert fmt_seconds(0.00123) == "1.23 ms"
    assert fmt_seconds(0.0456) == "45.6 ms"
    assert fmt_seconds(0.5) == "500 ms"
    assert fmt_seconds(1.689) == "1.69 s"
    assert fmt_seconds(12.3) == "12.3 s"
    assert fmt_seconds(float("nan")) == "-"
    assert fmt_ratio(3.0, 2.0) == "1.50x"
    assert fmt_ratio(300.0, 2.0) == "150x"
    assert fmt_ratio(1.0, 0.0) == "-"


def test_tables_have_a_header_and_one_line_per_row() -> None:
    rows = [Row("cold start", "1.00 s", "floor 10.0 ms", "100x", "< 0.5 s")]
    text = render_table(rows).splitlines()
    assert text[0].startswith("figure") and set(text[1]) <= {"-", " "}
    assert text[2].split("  ")[0] == "cold start"
    markdown = render_markdown_table(rows).splitlines()
    assert markdown[1] == "| --- | --- | --- | --- | --- |"
    assert markdown[2] == "| cold start | 1.00 s | floor 10.0 ms | 100x | < 0.5 s |"


def test_splice_replaces_only_the_generated_section() -> None:
    document = f"# B\n\nintro\n\n{BEGIN}\nold figures\n{END}\n\n## Notes\nkept\n"
    new = f"{BEGIN}\nnew figures\n{END}\n"
    spliced = splice(document, new)
    assert "old figures" not in spliced and "new figures" in spliced
    assert spliced.startswith("# B\n\nintro\n\n") and spliced.endswith("\n\n## Notes\nkept\n")
    assert splice(spliced, new) == spliced


def test_splice_appends_when_the_markers_are_missing() -> None:
    assert splice("# B\nnotes\n", f"{BEGIN}\nx\n{END}\n") == f"# B\nnotes\n\n{BEGIN}\nx\n{END}\n"


def test_tcp_rows_give_the_best_of_each_and_the_ratio_within_each_pair() -> None:
    tcp = Throughput(containers=[12e9, 8e9, 13e9], hosts=[15e9, 16e9, 14e9])
    best, paired = tcp_rows(DataPath("vxlan", tcp, "1450", 1500))
    assert best.figure.startswith("TCP across hosts, vxlan: container → container (MTU 1450")
    assert best.value == "13.00 Gbit/s" and best.goal == "≥ 0.85"
    assert best.baseline == "host → host 16.00 Gbit/s" and best.ratio == "0.81"
    assert paired.value == "0.80 (0.50 to 0.93)"  # 12/15, 8/16, 13/14
    assert "3 rounds" in paired.figure and "vxlan" in paired.figure


def test_a_backend_that_adds_no_header_is_held_to_the_higher_goal() -> None:
    tcp = Throughput(containers=[9e9], hosts=[10e9])
    [best, _] = tcp_rows(DataPath("host-gw", tcp, "1500", 1500))
    assert best.goal == "≥ 0.95" and "host-gw" in best.figure and best.ratio == "0.90"
    assert DataPath("x", tcp, "?", 1500).goal == "≥ 0.85"


def test_the_device_the_agent_made_is_read_from_its_log_and_named_in_the_row() -> None:
    log = (
        "2026-12-06 03:41:31,614 INFO overlayd.backend.wireguard.device: flannel-wg: created flannel-wg "
        "by starting wireguard-go\n2026-12-06 03:41:31,615 INFO overlayd.agent.reconciler: other\n"
    )
    assert device_made(log) == "created flannel-wg by starting wireguard-go"
    assert device_made("nothing of the kind\n") == ""
    tcp = Throughput(containers=[1e8], hosts=[1e10])
    [best, _] = tcp_rows(DataPath("wireguard", tcp, "1420", 1500, device_made(log)))
    assert "(MTU 1420, created flannel-wg by starting wireguard-go, best of 1)" in best.figure
