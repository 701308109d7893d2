"""Files the agent writes: atomic, with fixed modes, and a planted symlink is replaced, not followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from overlayd.backend.vxlan.mac import load_or_create_mac, mac_path
from overlayd.base.atomicfile import write_atomic
from overlayd.subnet.subnetenv import SubnetEnv


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_planted_symlink_is_replaced_and_its_target_untouched(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    for content in ("new\n", "precious\n"):  # also when the link's target already holds the text
        dest = tmp_path / f"run-{len(content)}" / "subnet.env"
        dest.parent.mkdir()
        dest.symlink_to(outside)
        assert write_atomic(dest, content) is True
        assert not dest.is_symlink() and dest.is_file()
        assert dest.read_text() == content
        assert outside.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []  # no temporary file left behind


def test_subnet_env_is_0644_and_rewritten_when_its_mode_drifts(tmp_path: Path) -> None:
    dest = tmp_path / "subnet.env"
    text = SubnetEnv.__name__  # any content
    old_umask = os.umask(0o077)
    try:
        assert write_atomic(dest, text) is True
    finally:
        os.umask(old_umask)
    assert mode(dest) == 0o644
    dest.chmod(0o600)
    assert write_atomic(dest, text) is True
    assert mode(dest) == 0o644
    assert write_atomic(dest, text) is False


def test_vtep_mac_state_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    planted = tmp_path / "elsewhere"
    planted.write_text("02:00:00:00:00:09\n")
    mac_path(state_dir, 1).symlink_to(planted)
    mac = load_or_create_mac(state_dir, 1, adopt="02:00:00:00:00:01")
    path = mac_path(state_dir, 1)
    assert (mac, path.read_text()) == ("02:00:00:00:00:01", "02:00:00:00:00:01\n")
    assert not path.is_symlink() and planted.read_text() == "02:00:00:00:00:09\n"
    assert (mode(path), mode(state_dir)) == (0o600, 0o700)


def test_a_binary_file_in_the_way_is_replaced(tmp_path: Path) -> None:
    """install-cni replaces whatever ``flannel`` plugin is there, e.g. flannel's own binary."""
    dest = tmp_path / "bin" / "flannel"
    dest.parent.mkdir()
    dest.write_bytes(b"\x7fELF\x02\x01\x01\0\xff\xfe")
    dest.chmod(0o755)
    assert write_atomic(dest, "#!/bin/sh\n", mode=0o755) is True
    assert (dest.read_text(), mode(dest)) == ("#!/bin/sh\n", 0o755)
    assert write_atomic(dest, "#!/bin/sh\n", mode=0o755) is False
    assert sorted(p.name for p in dest.parent.iterdir()) == ["flannel"]  # no temporary file left
