"""The subnets a host held before, remembered in the state directory."""

from __future__ import annotations

import logging
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from overlayd.agent.subnethistory import KEPT, history_path, load_history, remember, save_history


def net(cidr: str) -> IPv4Network:
    return IPv4Network(cidr)


def test_round_trip_newest_first(tmp_path: Path) -> None:
    assert load_history(tmp_path) == []
    history = remember(remember([], net("198.18.5.0/24")), net("198.19.9.0/24"))
    save_history(tmp_path, history)
    assert load_history(tmp_path) == [net("198.19.9.0/24"), net("198.18.5.0/24")]


def test_remember_moves_a_known_subnet_first_and_caps_the_length() -> None:
    history = [net(f"198.18.{n}.0/24") for n in range(KEPT)]
    assert remember(history, net("198.18.3.0/24"))[:2] == [net("198.18.3.0/24"), net("198.18.0.0/24")]
    assert len(remember(history, net("198.19.0.0/24"))) == KEPT


def test_a_garbled_line_is_skipped_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    history_path(tmp_path).write_text("198.18.5.0/24\nnot a subnet\n\n198.18.6.0/24\n")
    with caplog.at_level(logging.WARNING):
        assert load_history(tmp_path) == [net("198.18.5.0/24"), net("198.18.6.0/24")]
    assert f"{history_path(tmp_path)} line 2 is not an IPv4 subnet; skipped" in caplog.text
    assert "not a subnet" not in caplog.text, "the file's content is not quoted"
