"""The state directory's lock: refused when others can write the directory, never opened through a
link (the link's target is left untouched), and one holder at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from overlayd.agent.instancelock import InstanceLocked, UnsafeStateDir, hold_instance_lock, state_dir_problem


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


def test_the_lock_holds_our_pid_and_refuses_a_second_holder(state_dir: Path) -> None:
    fd = hold_instance_lock(state_dir)
    try:
        assert (state_dir / "lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(InstanceLocked) as refused:
            hold_instance_lock(state_dir)
        assert refused.value.pid == os.getpid()
    finally:
        os.close(fd)
    os.close(hold_instance_lock(state_dir))  # released with its descriptor


def test_a_missing_state_dir_is_created_private(tmp_path: Path) -> None:
    os.close(hold_instance_lock(tmp_path / "new" / "state"))
    assert (tmp_path / "new" / "state").stat().st_mode & 0o777 == 0o700


def test_a_symlink_planted_as_the_lock_is_refused_and_its_target_untouched(
    state_dir: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious"
    precious.write_text("root:x:0:0::/root:/bin/sh\n")
    (state_dir / "lock").symlink_to(precious)
    with pytest.raises(UnsafeStateDir) as refused:
        hold_instance_lock(state_dir)
    assert str(refused.value) == (
        f"{state_dir}/lock is a symbolic link (to {precious}); the lock is never opened through a link: "
        f"remove it (rm {state_dir}/lock)"
    )
    assert precious.read_text() == "root:x:0:0::/root:/bin/sh\n"
    dangling = tmp_path / "would-be-created"
    (state_dir / "lock").unlink()
    (state_dir / "lock").symlink_to(dangling)
    with pytest.raises(UnsafeStateDir):
        hold_instance_lock(state_dir)
    assert not dangling.exists()


def test_a_lock_that_is_a_hard_link_or_not_a_file_is_refused(state_dir: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    os.link(precious, state_dir / "lock")
    with pytest.raises(UnsafeStateDir, match="not a plain file of its own"):
        hold_instance_lock(state_dir)
    assert precious.read_text() == "keep me\n"
    (state_dir / "lock").unlink()
    os.mkfifo(state_dir / "lock")
    with pytest.raises(UnsafeStateDir, match="not a plain file of its own"):
        hold_instance_lock(state_dir)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o720])
def test_a_state_dir_others_can_write_is_refused_and_left_as_it_was(state_dir: Path, mode: int) -> None:
    state_dir.chmod(mode)
    with pytest.raises(UnsafeStateDir) as refused:
        hold_instance_lock(state_dir)
    assert f"(mode {mode:04o})" in str(refused.value) and f"chmod 700 {state_dir}" in str(refused.value)
    assert list(state_dir.iterdir()) == [], "no lock file created in a refused directory"


def test_a_state_dir_owned_by_another_user_is_refused(state_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory away")
    os.chown(state_dir, 65534, 65534)
    with pytest.raises(UnsafeStateDir, match=f"{state_dir} is owned by uid 65534"):
        hold_instance_lock(state_dir)


def test_state_dir_problem() -> None:
    path = Path("/var/lib/overlayd")
    assert state_dir_problem(path, 0o40755, 0, 0) is None
    assert state_dir_problem(path, 0o40700, 1000, 1000) is None
    assert state_dir_problem(path, 0o40700, 1000, 0) == (
        "/var/lib/overlayd is owned by uid 1000, who could plant files in it: chown 0 /var/lib/overlayd"
    )
    assert "chmod 700 /var/lib/overlayd" in (state_dir_problem(path, 0o40775, 0, 0) or "")
