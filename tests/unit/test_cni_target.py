"""What ``overlayd cni`` attaches: a path or an ``ip netns`` name as before, else a Docker container."""

from __future__ import annotations

import pytest

from overlayd.ops import cni_target
from overlayd.ops.cni_target import CniTarget, container_id_for, resolve_target


def test_a_path_is_taken_as_given_with_a_derived_id() -> None:
    target = resolve_target("/proc/123/ns/net")
    assert target == CniTarget("/proc/123/ns/net", container_id_for("/proc/123/ns/net"), "/proc/123/ns/net")
    assert target.container_id.startswith("overlayd-") and len(target.container_id) == 25


def test_without_a_docker_client_a_name_means_ip_netns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cni_target.shutil, "which", lambda _: None)
    assert resolve_target("nosuchname").netns == "/var/run/netns/nosuchname"


def test_an_unknown_container_falls_back_to_ip_netns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real docker client, pointed at a daemon that is not there: no such container."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert resolve_target("nosuchname").netns == "/var/run/netns/nosuchname"
