"""subnet.env rendering as flanneld writes it, reading it back, and atomic replacement."""

import os
from ipaddress import IPv4Network
from pathlib import Path

from overlayd.base.atomicfile import write_atomic
from overlayd.subnet.subnetenv import SubnetEnv, previous_subnet


def test_render_is_flanneld_format() -> None:
    env = SubnetEnv(IPv4Network("198.18.0.0/16"), IPv4Network("198.18.46.0/24"), 1450, False)
    assert env.render() == (
        "FLANNEL_NETWORK=198.18.0.0/16\n"
        "FLANNEL_SUBNET=198.18.46.1/24\n"
        "FLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=false\n"
    )


def test_previous_subnet_round_trip_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    assert previous_subnet(path) is None
    env = SubnetEnv(IPv4Network("198.18.0.0/16"), IPv4Network("198.18.7.0/24"), 1450, True)
    write_atomic(path, env.render())
    assert previous_subnet(path) == IPv4Network("198.18.7.0/24")
    path.write_text("FLANNEL_SUBNET=not-a-cidr\n")
    assert previous_subnet(path) is None


def test_write_atomic_mode_no_temp_left_and_unchanged_detection(tmp_path: Path) -> None:
    path = tmp_path / "run" / "flannel" / "subnet.env"
    assert write_atomic(path, "A=1\n") is True
    assert write_atomic(path, "A=1\n") is False
    assert write_atomic(path, "A=2\n") is True
    assert path.read_text() == "A=2\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert os.listdir(path.parent) == ["subnet.env"]
