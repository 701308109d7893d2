"""The reference docs list every agent option and every exported metric."""

from __future__ import annotations

import re
from pathlib import Path

from overlayd.agent.metrics import Metrics
from overlayd.option_specs import SPECS as _SPECS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_lists_every_option_with_its_variables() -> None:
    text = (DOCS / "configuration.md").read_text()
    for name in _SPECS:
        flag = "--" + name.replace("_", "-")
        row = rf"\| `(-\w, )?{flag}` \| `OVERLAYD_{name.upper()}`, `FLANNELD_{name.upper()}`"
        assert re.search(row, text), f"docs/configuration.md lacks a table row for {flag}"


def test_metrics_reference_lists_every_metric() -> None:
    text = (DOCS / "metrics.md").read_text()
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` |" in text, f"docs/metrics.md lacks {name}"
