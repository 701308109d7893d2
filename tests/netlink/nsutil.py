"""Helpers for tests in real network namespaces: commands, code run inside a namespace, and
the device spec and peer entries the tests program."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pickle
import secrets
import subprocess
import traceback
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from pyroute2.netns import setns

from overlayd.backend.plane import Fdb, Neigh, Plane, Route
from overlayd.backend.vxlan.device import DeviceSpec

RUN_PREFIX = f"ovn{secrets.token_hex(2)}"
_counter = itertools.count()


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise with its stderr on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ip_json(ns: str, *argv: str) -> Any:
    """``ip -n <ns> -d -j <argv>`` parsed."""
    return json.loads(run("ip", "-n", ns, "-d", "-j", *argv).stdout or "[]")


def new_netns() -> str:
    name = f"{RUN_PREFIX}{next(_counter)}"
    run("ip", "netns", "add", name)
    run("ip", "-n", name, "link", "set", "lo", "up")
    return name


def delete_netns(name: str) -> None:
    run("ip", "netns", "del", name, check=False)


def in_netns(name: str, function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function(*args)`` in a child process inside namespace ``name``; return its result.

    A fork keeps the namespace switch out of this process (``setns`` would otherwise move the
    pytest thread); an exception in the child is re-raised here with the child's traceback.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            setns(name, flags=0)  # Python 3.11 has no os.setns
            outcome = ("ok", function(*args))
        except BaseException:
            outcome = ("error", traceback.format_exc())
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(pickle.dumps(outcome))
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:
        raise AssertionError(f"child in {name} died without a result")
    status, value = pickle.loads(data)
    if status == "error":
        raise AssertionError(f"in namespace {name}:\n{value}")
    return value


SPEC = DeviceSpec(
    vni=1,
    local_ip=IPv4Address("192.0.2.1"),
    underlay_ifname="u0",
    port=0,
    gbp=False,
    mtu=1450,
    address=IPv4Interface("198.18.1.0/32"),
    mac="0a:00:00:00:01:01",
)


def peer(n: int, mac: str | None = None) -> Plane:
    """The three entries of peer ``n``: subnet 198.18.<n>.0/24 behind 192.0.2.<n>."""
    gateway = IPv4Address(f"198.18.{n}.0")
    mac = mac or f"0a:00:00:00:00:{n:02x}"
    return Plane(
        frozenset({Neigh(gateway, mac)}),
        frozenset({Fdb(mac, IPv4Address(f"192.0.2.{n}"))}),
        frozenset({Route(IPv4Network(f"198.18.{n}.0/24"), gateway)}),
    )


def union(*planes: Plane) -> Plane:
    """Every kind of entry of all ``planes`` together."""
    kinds = (field.name for field in dataclasses.fields(Plane))
    return Plane(*(frozenset().union(*(getattr(plane, kind) for plane in planes)) for kind in kinds))
