"""What the CNI plugin costs per container: process start-up and ADD, beside their floors.

``exec_times`` is shared with ``cni-shim/bench_startup.py``. ``cni_add`` runs the installed
shim (``overlayd install-cni``) delegating to the reference bridge plugin, against the bridge
plugin alone with the very config the shim delegated (read back from the shim's ``dataDir``),
and ``python -S -c pass`` as the interpreter's floor, interleaved so noise hits all three alike.
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

from overlayd.lab.namespaces import SHIPPED_CONFLIST, LabHost, sh
from overlayd.ops.install_cni import install_cni

REFERENCE_PLUGINS = Path("/usr/lib/cni")
IFNAME = "eth0"


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
class CniAddTimes:
    shim_and_bridge: list[float]
    bridge_alone: list[float]
    python_floor: list[float]  # python -S -c pass


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


def cni_add(host: LabHost, container_ns: str, work: Path, runs: int) -> CniAddTimes:
    """ADD then DEL (untimed) ``runs`` times each way, into ``container_ns``; call inside the host's netns."""
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

    def add_del(cmd: str, config: dict[str, Any], cid: str) -> float:
        payload = json.dumps(config).encode()
        env = {**base, "CNI_CONTAINERID": cid}
        took = exec_time([cmd], {**env, "CNI_COMMAND": "ADD"}, payload)
        exec_time([cmd], {**env, "CNI_COMMAND": "DEL"}, payload)
        return took

    try:
        # One ADD through the shim to learn the exact delegate config it hands to bridge.
        exec_time(
            [plugin],
            {**base, "CNI_CONTAINERID": "bench-probe", "CNI_COMMAND": "ADD"},
            json.dumps(conf).encode(),
        )
        saved = work / "cni-state" / f"{conf['name']}+bench-probe+{IFNAME}"
        delegate = json.loads(saved.read_text())
        exec_time(
            [plugin],
            {**base, "CNI_CONTAINERID": "bench-probe", "CNI_COMMAND": "DEL"},
            json.dumps(conf).encode(),
        )
        bridge = str(REFERENCE_PLUGINS / delegate.get("type", "bridge"))
        shim, alone, floor = [], [], []
        for k in range(runs):
            shim.append(add_del(plugin, conf, f"bench-shim-{k}"))
            alone.append(add_del(bridge, delegate, f"bench-bridge-{k}"))
            floor.append(exec_time([sys.executable, "-S", "-c", "pass"], base))
    finally:
        sh("ip", "netns", "del", container_ns, check=False)
    return CniAddTimes(shim, alone, floor)
