"""``overlayd config get|set`` against a real etcd, run as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from overlayd.lab.etcdserver import EtcdServer


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


def put_lease(etcd: EtcdServer, prefix: str, subnet: str, host: int) -> None:
    """A node's lease as flanneld writes it (no TTL needed: the command lists what is there)."""
    value = json.dumps({"PublicIP": f"192.0.2.{host}", "BackendType": "vxlan",
                        "BackendData": {"VNI": 1, "VtepMAC": f"02:00:00:00:00:{host:02x}"}})  # fmt: skip
    etcd.etcdctl("put", f"{prefix}/subnets/{subnet.replace('/', '-')}", value)


def test_set_refuses_without_force_a_network_that_leaves_live_leases_outside(
    etcd_server: EtcdServer, prefix: str
) -> None:
    """Written, it would have every agent hold the old config until restarted, and a restart
    renumbers the node: refused with the count, a few of the leases and --force, nothing written."""
    first = '{"Network": "198.18.0.0/16"}'
    assert overlayd(etcd_server, prefix, "set", "-", stdin=first).returncode == 0
    for host, subnet in ((11, "198.18.5.0/24"), (12, "198.18.200.0/24"), (13, "198.18.201.0/24"),
                         (14, "198.18.202.0/24"), (15, "198.18.203.0/24")):  # fmt: skip
        put_lease(etcd_server, prefix, subnet, host)
    half = '{"Network": "198.18.0.0/17"}'
    refused = overlayd(etcd_server, prefix, "set", "-", stdin=half)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.startswith(
        "refused: this change (from Network 198.18.0.0/16 to Network 198.18.0.0/17) does not hand out "
        "4 of 5 live lease(s): 198.18.200.0/24 (192.0.2.12), 198.18.201.0/24 (192.0.2.13), "
        "198.18.202.0/24 (192.0.2.14) and 1 more."
    ), refused.stderr
    assert "Add --force to write it anyway" in refused.stderr and "Traceback" not in refused.stderr
    assert '+  "Network": "198.18.0.0/17"' in refused.stdout, "the diff is still shown"
    assert stored(etcd_server, prefix) == first

    dry = overlayd(etcd_server, prefix, "set", "-", "--dry-run", stdin=half)
    assert dry.returncode == 1 and "Add --force" in dry.stderr, "a dry run answers as the real run would"
    assert stored(etcd_server, prefix) == first

    forced = overlayd(etcd_server, prefix, "set", "-", "--force", stdin=half)
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr.startswith(
        "warning: this change (from Network 198.18.0.0/16 to Network 198.18.0.0/17) does not hand out 4"
    )
    assert "--force given" in forced.stderr and "wrote network config at" in forced.stdout
    assert stored(etcd_server, prefix) == half


def test_set_writes_without_force_a_change_every_live_lease_fits(
    etcd_server: EtcdServer, prefix: str
) -> None:
    """A wider Network needs no --force; another SubnetLen makes every lease a misfit."""
    assert overlayd(etcd_server, prefix, "set", "-", stdin='{"Network": "198.18.0.0/16"}').returncode == 0
    put_lease(etcd_server, prefix, "198.18.5.0/24", 11)
    wider = '{"Network": "198.16.0.0/14", "SubnetMin": "198.18.0.0"}'
    done = overlayd(etcd_server, prefix, "set", "-", stdin=wider)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert stored(etcd_server, prefix) == wider
    longer = '{"Network": "198.16.0.0/14", "SubnetLen": 25}'
    refused = overlayd(etcd_server, prefix, "set", "-", stdin=longer)
    assert refused.returncode == 1
    assert "does not hand out 1 of 1 live lease(s): 198.18.5.0/24 (192.0.2.11)." in refused.stderr
    assert stored(etcd_server, prefix) == wider
