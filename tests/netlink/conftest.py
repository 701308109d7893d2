"""Real network namespaces for the kernel-programming tests.

Each test gets fresh namespaces named ``ovn<run><n>`` and deletes them however it ends. Code under
test runs in a forked child that has entered the namespace (``in_netns``), so nothing in this
pytest process — and nothing in the root namespace — is ever switched or touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from nsutil import delete_netns, new_netns, run


@pytest.fixture(autouse=True)
def _skip_unless_root(request: pytest.FixtureRequest) -> None:
    """Skip root-marked tests when not root, with a reason that says how to run them."""
    if request.node.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root for network namespaces (run with sudo)")


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace with an underlay veth ``u0`` (192.0.2.1/24, peer ``u1`` up) and nothing else."""
    name = new_netns()
    try:
        run("ip", "-n", name, "link", "add", "u0", "type", "veth", "peer", "name", "u1")
        run("ip", "-n", name, "addr", "add", "192.0.2.1/24", "dev", "u0")
        run("ip", "-n", name, "link", "set", "u0", "up")
        run("ip", "-n", name, "link", "set", "u1", "up")
        yield name
    finally:
        delete_netns(name)


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    """Two "hosts" joined by a veth underlay: ``u0`` is 192.0.2.1/24 and 192.0.2.2/24."""
    names = (new_netns(), new_netns())
    try:
        run("ip", "-n", names[0], "link", "add", "u0", "type", "veth",
            "peer", "name", "u0", "netns", names[1])
        for host, name in enumerate(names, start=1):
            run("ip", "-n", name, "addr", "add", f"192.0.2.{host}/24", "dev", "u0")
            run("ip", "-n", name, "link", "set", "u0", "up")
        yield names
    finally:
        for name in names:
            delete_netns(name)
