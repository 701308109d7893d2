"""What the CNI plugin costs per container: ADD and DEL, each beside its floors.

``exec_times`` is shared with ``overlayd.bench.cni_startup``. ``cni_add_del`` runs the installed
shim (``overlayd install-cni``) delegating to the reference bridge plugin, against the bridge
plugin alone with the very config the shim delegated (read back from the shim's ``dataDir``),
and two floors of the same interpreter: ``python -IS -c pass`` (start and normal exit) and
``python -IS -c 'import posix; posix._exit(0)'`` (start alone: the shim leaves with ``_exit``
too, skipping the ~2 ms of teardown ``-c pass`` pays). All are interleaved so noise hits each
alike.

The same rounds also run the shim against a stub delegate (a shell script that answers at once,
without reading its input) and the stub alone: the shim's own work without bridge's and the
kernel's variance, which is several times larger than that work.

Every timed call follows a pause of ``SETTLE`` seconds, so each ADD and DEL finds the kernel in
the same state. This matters for DEL: bridge's DEL of a veth that has existed for 10 ms or more
costs ~8 ms more than of one created a moment before (the kernel's work once a new device is up),
and a DEL through the shim always comes at least an interpreter start after its ADD.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlayd.lab.hosts import SHIPPED_CONFLIST, LabHost
from overlayd.lab.shell import sh
from overlayd.ops.install_cni import install_cni

REFERENCE_PLUGINS = Path("/usr/lib/cni")
IFNAME = "eth0"
SETTLE = 0.1  # seconds before each timed call; DEL costs the same from ~20 ms after ADD on
FLOOR_PASS = ["-IS", "-c", "pass"]
FLOOR_START = ["-IS", "-c", "import posix; posix._exit(0)"]


def exec_time(cmd: list[str], env: Mapping[str, str], stdin: bytes = b"") -> float:
    """Seconds for one fork + exec + exit of ``cmd``; RuntimeError naming it if it fails."""
    started = time.perf_counter()
    done = subprocess.run(cmd, env=dict(env), input=stdin, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {done.returncode}: {(done.stdout + done.stderr)[-400:]!r}"
        )
    return elapsed


def exec_times(cmd: list[str], env: Mapping[str, str], runs: int) -> list[float]:
    return [exec_time(cmd, env) for _ in range(runs)]


@dataclass(frozen=True)
class CniTimes:
    """Seconds per call, one entry per round; every list has the same length."""

    shim_add: list[float]  # the installed shim, delegating to bridge
    bridge_add: list[float]  # bridge alone, with the config the shim delegated
    shim_del: list[float]
    bridge_del: list[float]
    floor_pass: list[float]  # python -IS -c pass
    floor_start: list[float]  # python -IS -c 'import posix; posix._exit(0)'
    stub_shim_add: list[float]  # the shim, delegating to the stub
    stub_add: list[float]  # the stub alone
    stub_shim_del: list[float]
    stub_del: list[float]


def shim_netconf(host: LabHost, work: Path) -> dict[str, Any]:
    """The shipped conflist's flannel entry as a runtime passes it, with state under ``work``."""
    shipped = json.loads(SHIPPED_CONFLIST.read_text())
    return {
        "cniVersion": shipped["cniVersion"],
        "name": shipped["name"],
        **shipped["plugins"][0],
        "subnetFile": str(host.subnet_file),
        "dataDir": str(work / "cni-state"),
        "ipam": {"dataDir": str(work / "ipam")},
    }


def write_stub(directory: Path, name: str, cni_version: str) -> Path:
    """A plugin ``name`` that prints a one-address result at ``cni_version`` and exits."""
    directory.mkdir(parents=True, exist_ok=True)
    result = {"cniVersion": cni_version, "ips": [{"address": "198.18.0.2/24"}]}
    stub = directory / name
    stub.write_text(f"#!/bin/sh\necho '{json.dumps(result)}'\n")
    stub.chmod(0o755)
    return stub


def cni_add_del(host: LabHost, container_ns: str, work: Path, runs: int) -> CniTimes:
    """``runs`` rounds of ADD and DEL through the shim and through bridge alone, and both floors,
    into ``container_ns``; call inside the host's netns."""
    bin_dir = work / "cni-bin"
    plugin = str(install_cni(bin_dir))
    conf = shim_netconf(host, work)
    sh("ip", "netns", "add", container_ns)
    base = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_NETNS": f"/run/netns/{container_ns}",
        "CNI_IFNAME": IFNAME,
        "CNI_PATH": f"{bin_dir}:{REFERENCE_PLUGINS}",
    }

    def call(cmd: str, command: str, config: dict[str, Any], cid: str, cni_path: str = "") -> float:
        time.sleep(SETTLE)
        env = {**base, "CNI_CONTAINERID": cid, "CNI_COMMAND": command}
        if cni_path:
            env["CNI_PATH"] = cni_path
        return exec_time([cmd], env, json.dumps(config).encode())

    def floor(args: list[str]) -> float:
        time.sleep(SETTLE)
        return exec_time([sys.executable, *args], base)

    try:
        # One ADD through the shim to learn the exact delegate config it hands to bridge.
        call(plugin, "ADD", conf, "bench-probe")
        saved = work / "cni-state" / f"{conf['name']}+bench-probe+{IFNAME}"
        delegate = json.loads(saved.read_text())
        call(plugin, "DEL", conf, "bench-probe")
        bridge = str(REFERENCE_PLUGINS / delegate.get("type", "bridge"))
        stub = write_stub(work / "cni-stub", delegate.get("type", "bridge"), delegate["cniVersion"])
        stub_conf = {**conf, "dataDir": str(work / "cni-stub-state")}
        times: dict[str, list[float]] = {name: [] for name in CniTimes.__dataclass_fields__}
        for k in range(runs):
            # Alternate who goes first, so neither always follows the other's kernel work.
            pair = [("shim", plugin, conf), ("bridge", bridge, delegate)]
            order = pair if k % 2 == 0 else pair[::-1]
            for who, cmd, config in order:  # one container netns: each DELs before the other ADDs
                for command in ("ADD", "DEL"):
                    times[f"{who}_{command.lower()}"].append(call(cmd, command, config, f"bench-{who}-{k}"))
            stubs = [("stub_shim", plugin, stub_conf), ("stub", str(stub), delegate)]
            for who, cmd, config in stubs if k % 2 == 0 else stubs[::-1]:
                for command in ("ADD", "DEL"):
                    took = call(cmd, command, config, f"bench-{who}-{k}", str(stub.parent))
                    times[f"{who}_{command.lower()}"].append(took)
            times["floor_pass"].append(floor(FLOOR_PASS))
            times["floor_start"].append(floor(FLOOR_START))
    finally:
        sh("ip", "netns", "del", container_ns, check=False)
    return CniTimes(**times)
