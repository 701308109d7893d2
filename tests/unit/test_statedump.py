"""SIGUSR1's state line says what an operator asks about and never a secret; stray signals are
logged once each."""

from __future__ import annotations

import logging
import signal
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from overlayd.agent.metrics import Health
from overlayd.agent.statedump import AgentState, StraySignals, describe
from overlayd.backend.select import CONFIG_PARSERS
from overlayd.options import AgentOptions
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs

SECRETS = ("s3cr3t-pass", "etcd-admin", "/etc/overlayd/client-key.pem")


def state(**changes: object) -> AgentState:
    options = AgentOptions(
        etcd_endpoints=("https://192.0.2.2:2379",), etcd_cafile="/etc/overlayd/ca.pem",
        etcd_certfile="/etc/overlayd/client.pem", etcd_keyfile=SECRETS[2],
        etcd_username=SECRETS[1], etcd_password=SECRETS[0], state_dir=Path("/var/lib/overlayd"),
    )  # fmt: skip
    attrs = LeaseAttrs(IPv4Address("192.0.2.11"), "vxlan", vni=1, vtep_mac="02:00:00:00:00:05")
    lease = Lease(IPv4Network("198.18.5.0/24"), attrs)
    fields: dict[str, object] = {
        "options": options,
        "config": parse_network_config(
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}}', backends=CONFIG_PARSERS
        ),
        "lease": lease,
        "lease_expires_in": 86000.4,
        "subnet_leases": 3,
        "peers_programmed": 2,
        "health": Health(ready=True, reason="ready", etcd_problem="connection refused"),
    }
    fields.update(changes)
    return AgentState(**fields)  # type: ignore[arg-type]


def test_the_line_names_lease_peers_health_and_config() -> None:
    line = describe(state())
    assert line.startswith(
        "state: lease 198.18.5.0/24 (public IP 192.0.2.11, VTEP MAC 02:00:00:00:00:05, expires in 86000s); "
        "3 subnet leases, 2 peers programmed; ready: ready; etcd unreachable (connection refused); "
        "Network 198.18.0.0/16, SubnetLen 24"
    )
    assert "Network 198.18.0.0/16, SubnetLen 24, backend vxlan VNI 1 port 8472;" in line
    assert "(TLS, password auth) prefix /coreos.com/network" in line
    assert "\n" not in line


def test_the_line_holds_no_secret() -> None:
    line = describe(state())
    assert not [secret for secret in SECRETS if secret in line], line


def test_before_a_lease_and_a_config() -> None:
    line = describe(state(lease=None, config=None, lease_expires_in=None, health=Health()))
    assert line.startswith("state: no lease; 3 subnet leases, 2 peers programmed; not ready: starting; "
                           "no network config yet; etcd https://192.0.2.2:2379")  # fmt: skip


def test_each_stray_signal_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    handler = StraySignals()
    with caplog.at_level(logging.WARNING):
        for signum in (signal.SIGUSR2, signal.SIGUSR2, signal.SIGALRM):
            handler(signum, None)
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring SIGUSR2: it has no meaning for overlayd (SIGUSR1 logs the state)",
        "ignoring SIGALRM: it has no meaning for overlayd (SIGUSR1 logs the state)",
    ]
