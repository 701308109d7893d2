"""``overlayd status --json --cluster`` as an operator runs it on a host of an IPv6-only network
(a real etcd; subnet.env without FLANNEL_SUBNET; no agent, no device here): our lease found by
the IPv6 subnet, every lease listed, nothing taken for 0.0.0.0/0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from overlayd.lab.etcdserver import EtcdServer

from .test_config_cmd_ipv6only import V6_ONLY, put_v6_only_lease

SUBNET_ENV = (
    "FLANNEL_IPV6_NETWORK=2001:db8:1000::/48\nFLANNEL_IPV6_SUBNET=2001:db8:1000:5::1/64\n"
    "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
)


def status(etcd: EtcdServer, prefix: str, subnet_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "overlayd",
        "status",
        f"--etcd-endpoints={etcd.endpoint}",
        f"--etcd-prefix={prefix}",
        f"--subnet-file={subnet_file}",
        "--metrics-address=off",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_status_of_an_ipv6_only_host(etcd_server: EtcdServer, prefix: str, tmp_path: Path) -> None:
    etcd_server.etcdctl("put", f"{prefix}/config", V6_ONLY)
    for n in (5, 6):
        put_v6_only_lease(etcd_server, prefix, n)
    subnet_file = tmp_path / "subnet.env"
    subnet_file.write_text(SUBNET_ENV)
    done = status(etcd_server, prefix, subnet_file, "--json", "--cluster")
    assert "Traceback" not in done.stderr, done.stderr
    data = json.loads(done.stdout)
    assert data["etcd_error"] is None
    own = data["own_lease"]
    assert (own["subnet"], own["ipv6_subnet"], own["public_ipv6"]) == (
        None,
        "2001:db8:1000:5::/64",
        "2001:db8::5",
    )
    assert own["vtep_mac_v6"] == "02:00:00:00:06:05" and own["reservation"] is True
    assert [lease["ipv6_subnet"] for lease in data["leases"]] == [
        "2001:db8:1000:5::/64",
        "2001:db8:1000:6::/64",
    ]
    assert data["firewall"].startswith("ip6 ") and "iptables" not in data["firewall"]
    text = status(etcd_server, prefix, subnet_file, "--cluster")
    assert "Traceback" not in text.stderr, text.stderr
    assert "etcd lease  2001:db8:1000:5::/64 public 2001:db8::5 vtep 02:00:00:00:06:05" in text.stdout
    assert "0.0.0.0" not in text.stdout
