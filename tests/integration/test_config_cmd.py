"""``overlayd config get|set`` against a real etcd, run as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from overlayd.etcdserver import EtcdServer


def overlayd(etcd: EtcdServer, prefix: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "overlayd", "config", *args,
               f"--etcd-endpoints={etcd.endpoint}", f"--etcd-prefix={prefix}"]  # fmt: skip
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def stored(etcd: EtcdServer, prefix: str) -> str:
    return etcd.etcdctl("get", "--print-value-only", f"{prefix}/config").strip()


def test_get_of_a_missing_config_says_how_to_create_it(etcd_server: EtcdServer, prefix: str) -> None:
    done = overlayd(etcd_server, prefix, "get")
    assert done.returncode == 1
    assert f"network config at {prefix}/config is missing; create it with: overlayd config set" in done.stderr


def test_set_refuses_an_invalid_config_with_the_agents_message(etcd_server: EtcdServer, prefix: str) -> None:
    done = overlayd(etcd_server, prefix, "set", "-", stdin='{"Network": "198.18.0.0/16", "SubnetLen": 31}')
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"refused: network config at {prefix}/config: SubnetLen 31 is larger than 30; "
        "use a SubnetLen between 18 and 30 for Network 198.18.0.0/16"
    )
    assert stored(etcd_server, prefix) == ""


def test_set_dry_run_then_set_then_get(etcd_server: EtcdServer, prefix: str) -> None:
    first = '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}}'
    assert overlayd(etcd_server, prefix, "set", "-", stdin=first).returncode == 0
    second = '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": 2}}'
    dry = overlayd(etcd_server, prefix, "set", "-", "--dry-run", stdin=second)
    assert dry.returncode == 0, dry.stderr
    assert f"--- {prefix}/config (in etcd)" in dry.stdout and '+    "VNI": 2' in dry.stdout
    assert "dry run: nothing written" in dry.stdout
    assert stored(etcd_server, prefix) == first

    done = overlayd(etcd_server, prefix, "set", "-", stdin=second)
    assert done.returncode == 0, done.stderr
    assert stored(etcd_server, prefix) == second
    again = overlayd(etcd_server, prefix, "set", "-", stdin=second.replace(" ", ""))
    assert "already holds this config; nothing to write" in again.stdout

    got = overlayd(etcd_server, prefix, "get")
    assert got.returncode == 0, got.stderr
    assert second in got.stdout
    view = json.loads(got.stdout.split("(defaults filled in):\n")[1])
    assert view["Backend"]["VNI"] == 2 and view["SubnetLen"] == 24
