"""What the registry says when etcd cannot be reached: one line per outage, and the cause by name.

No etcd runs here: the endpoints are free ports on 127.0.0.1 (connection refused at once) and a
host name under ``.invalid``, which no resolver may answer (RFC 6761).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from overlayd.etcd.registry import Registry, RegistryError
from overlayd.etcd.settings import EtcdSettings
from overlayd.lab.etcdserver import free_port


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The host names the registry looks up (gRPC resolves names on its own, not through Python)."""
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> object:
        looked_up.append(host)
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@pytest.fixture
def unreachable() -> Iterator[list[Registry]]:
    """Registries made by the test, closed at teardown."""
    registries: list[Registry] = []
    yield registries
    for registry in registries:
        registry.close()


def _registry(made: list[Registry], *endpoints: str) -> Registry:
    made.append(Registry(EtcdSettings(endpoints=endpoints, timeout=1.0)))
    return made[-1]


def test_an_outage_logs_its_first_fail_over_only(
    unreachable: list[Registry], caplog: pytest.LogCaptureFixture
) -> None:
    """Every call fails over on every endpoint during an outage: one warning, the rest debug."""
    endpoints = tuple(f"http://127.0.0.1:{free_port()}" for _ in range(3))
    registry = _registry(unreachable, *endpoints)
    caplog.set_level(logging.DEBUG, logger="overlayd.etcd.registry")

    for _ in range(5):
        with pytest.raises(RegistryError, match="unreachable") as caught:
            registry.list_leases()
        assert caught.value.unreachable  # what the agent's start-up retry compares, not the text

    fail_overs = [record for record in caplog.records if "failing over" in record.getMessage()]
    warnings = [record.getMessage() for record in fail_overs if record.levelno >= logging.WARNING]
    assert len(fail_overs) == 15  # 5 calls x 3 endpoints
    assert len(warnings) == 1
    assert warnings[0].startswith(f"etcd: endpoint {endpoints[0]} unreachable (")
    assert warnings[0].endswith(f"Connection refused); failing over to {endpoints[1]}")


def test_a_host_name_that_does_not_resolve_is_named_and_looked_up_once(
    unreachable: list[Registry], lookups: list[str]
) -> None:
    registry = _registry(unreachable, f"http://etcd-typo.invalid:{free_port()}")

    for _ in range(3):
        with pytest.raises(RegistryError) as error:
            registry.get_config()
        assert "unreachable (host etcd-typo.invalid does not resolve (" in str(error.value)
        assert str(error.value).endswith("); check --etcd-endpoints)")

    assert lookups == ["etcd-typo.invalid"]  # the answer is reused, not asked for on every retry


def test_a_resolvable_host_or_an_address_keeps_the_connection_error(
    unreachable: list[Registry], lookups: list[str]
) -> None:
    registry = _registry(unreachable, f"http://localhost:{free_port()}", f"http://127.0.0.1:{free_port()}")

    with pytest.raises(RegistryError) as error:
        registry.get_config()

    assert "does not resolve" not in str(error.value) and "Connection refused" in str(error.value)
    assert lookups == ["localhost"]  # an IP address is not looked up
