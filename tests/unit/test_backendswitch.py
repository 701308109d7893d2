"""A switch to another backend removes what the previous run's backend left, once, from the config
that run kept in the state directory; no root, kernel or etcd (the old backend records its calls)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from overlayd.agent.backendswitch import record_path, switch_backend
from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.config import BackendParsers, NetworkConfig, parse_network_config
from tests.unit.test_backend_seam import OtherConfig

VXLAN = b'{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": 7}}'
OTHER = b'{"Network": "198.18.0.0/16", "Backend": {"Type": "other"}}'
PARSERS = BackendParsers({**CONFIG_PARSERS.parsers, "other": lambda fields: OtherConfig()}, "vxlan")


class Recording:
    """The previous run's backend: records what it is asked to remove; ``fail`` makes it raise."""

    def __init__(self, fail: bool = False) -> None:
        self.removed: list[NetworkConfig] = []
        self.closed = False
        self.fail = fail

    def remove(self, config: NetworkConfig) -> list[str]:
        if self.fail:
            raise OSError("netlink: EPERM")
        self.removed.append(config)
        return ["deleted flannel.7"]

    def close(self) -> None:
        self.closed = True


def parsed(raw: bytes) -> NetworkConfig:
    return parse_network_config(raw, backends=PARSERS)


def switch(tmp_path: Path, raw: bytes, old: Recording) -> list[str]:
    made: list[str] = []

    def make(backend_type: str, where: str) -> Recording:
        made.append(backend_type)
        return old

    actions = switch_backend(tmp_path, parsed(raw), raw, PARSERS, make)  # type: ignore[arg-type]
    assert made == ([] if not old.removed and not old.fail else ["vxlan"])
    return actions


def test_the_first_run_removes_nothing_and_keeps_its_config(tmp_path: Path) -> None:
    old = Recording()
    assert switch(tmp_path, VXLAN, old) == [] and not old.removed
    assert record_path(tmp_path).read_bytes() == VXLAN
    assert record_path(tmp_path).stat().st_mode & 0o777 == 0o600


def test_the_same_backend_again_removes_nothing(tmp_path: Path) -> None:
    record_path(tmp_path).write_bytes(VXLAN)
    old = Recording()
    assert switch(tmp_path, VXLAN.replace(b"7", b"8"), old) == [] and not old.removed


def test_another_backend_removes_what_the_old_one_left_for_its_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record_path(tmp_path).write_bytes(VXLAN)
    old = Recording()
    with caplog.at_level(logging.INFO, logger="overlayd.agent.backendswitch"):
        assert switch(tmp_path, OTHER, old) == ["deleted flannel.7"]
    assert old.removed == [parsed(VXLAN)] and old.closed
    assert record_path(tmp_path).read_bytes() == OTHER  # the next start removes nothing
    assert "switched backend from vxlan to other" in caplog.text
    assert "backend vxlan: deleted flannel.7" in caplog.text


def test_a_failed_removal_is_logged_and_tried_again_on_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record_path(tmp_path).write_bytes(VXLAN)
    old = Recording(fail=True)
    assert switch(tmp_path, OTHER, old) == [] and old.closed
    assert "could not remove what backend vxlan left (netlink: EPERM)" in caplog.text
    assert record_path(tmp_path).read_bytes() == VXLAN


def test_an_unreadable_record_is_named_and_harms_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record_path(tmp_path).write_bytes(b"{not json")
    old = Recording()
    assert switch(tmp_path, OTHER, old) == [] and not old.removed
    assert "cannot read the previous run's config" in caplog.text
    assert str(record_path(tmp_path)) in caplog.text
    assert record_path(tmp_path).read_bytes() == OTHER


