"""The lab's convergence check asks the backend whether it writes a route to every peer."""

from __future__ import annotations

import json

from overlayd.lab.namespaces import routes_traffic


def config(backend_type: str) -> str:
    return json.dumps({"Network": "198.18.0.0/16", "Backend": {"Type": backend_type}})


def test_routes_are_awaited_only_for_backends_that_write_them() -> None:
    assert routes_traffic(config("vxlan")) and routes_traffic("")  # "": the lab's default config
    assert not routes_traffic(config("alloc")) and not routes_traffic(config("extension"))
    assert routes_traffic('{"Network": 7}')  # unreadable: the agents never converge, and the wait says so
