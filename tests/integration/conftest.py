"""Fixtures for tests against a real etcd on 127.0.0.1 (random free ports, a tmp data dir).

One etcd serves the whole session; each test isolates itself under its own random prefix.
Tests that stop or restart etcd use ``private_etcd`` so they cannot disturb the others.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from overlayd.etcd.registry import Registry
from overlayd.etcd.settings import EtcdSettings
from overlayd.lab.etcdserver import EtcdServer

ETCD_MISSING = shutil.which("etcd") is None or shutil.which("etcdctl") is None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here needs etcd (but the contract tests' in-memory side): mark it, and skip it
    where etcd is not installed."""
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="etcd/etcdctl not installed")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "memory" in callspec.params.values():
            continue
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.etcd)
            if ETCD_MISSING:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of the test's own, for tests that stop, restart or compact it."""
    server = EtcdServer(tmp_path / "etcd", name="private-etcd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:10]}/network"


@pytest.fixture
def make_registry(prefix: str) -> Iterator[Callable[[EtcdServer], Registry]]:
    """Registries on the test's prefix, all closed at teardown."""
    registries: list[Registry] = []

    def make(server: EtcdServer) -> Registry:
        registry = Registry(EtcdSettings(endpoints=(server.endpoint,), prefix=prefix, timeout=3.0))
        registries.append(registry)
        return registry

    yield make
    for registry in registries:
        registry.close()


@pytest.fixture
def registry(make_registry: Callable[[EtcdServer], Registry], etcd_server: EtcdServer) -> Registry:
    return make_registry(etcd_server)
