"""The VTEP MAC file: stable across restarts, adoption of an existing device's MAC, repair."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from overlayd.backend.vxlan.mac import is_valid_vtep_mac, load_or_create_mac, mac_path


def test_generated_mac_is_local_unicast_and_stable(tmp_path: Path) -> None:
    mac = load_or_create_mac(tmp_path / "state", 1)
    assert is_valid_vtep_mac(mac)
    assert int(mac[:2], 16) & 0x03 == 0x02  # locally administered, unicast
    assert load_or_create_mac(tmp_path / "state", 1) == mac
    path = mac_path(tmp_path / "state", 1)
    assert path.read_text() == mac + "\n"
    assert path.stat().st_mode & 0o777 == 0o600  # agent state: owner only
    assert load_or_create_mac(tmp_path / "state", 2) != mac  # one file per VNI


def test_adopted_mac_wins_and_is_persisted(tmp_path: Path) -> None:
    load_or_create_mac(tmp_path, 1)
    assert load_or_create_mac(tmp_path, 1, adopt="8A:DA:7F:E8:8A:5F") == "8a:da:7f:e8:8a:5f"
    assert load_or_create_mac(tmp_path, 1) == "8a:da:7f:e8:8a:5f"
    with pytest.raises(ValueError, match="not a unicast MAC"):
        load_or_create_mac(tmp_path, 1, adopt="01:00:5e:00:00:01")


@pytest.mark.parametrize("content", ["garbage\n", "", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"])
def test_corrupt_file_is_replaced_with_a_warning(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = mac_path(tmp_path, 1)
    path.write_text(content)
    with caplog.at_level(logging.WARNING):
        mac = load_or_create_mac(tmp_path, 1)
    assert is_valid_vtep_mac(mac)
    assert path.read_text() == mac + "\n"
    assert str(path) in caplog.text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
