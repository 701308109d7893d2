"""Start-up cost of the installed shim, side by side with its interpreter and host-local.

    sudo .venv/bin/python -m overlayd.bench.cni_startup [--runs 300]

Installs the shim into a temporary CNI bin dir (as ``overlayd install-cni`` does), then times
``CNI_COMMAND=VERSION`` calls (fork + exec + answer) against a bare ``python -IS -c pass`` of the
same interpreter, the same with ``site`` (what a console-script entry point would pay), and the
Go reference plugin host-local. It also reports what the ADD path imports on top. ADD itself,
beside the bridge plugin alone, is measured by ``overlayd bench``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from overlayd.bench.cni import exec_times
from overlayd.ops.install_cni import install_cni


def median_ms(cmd: list[str], runs: int) -> float:
    env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}
    return statistics.median(exec_times(cmd, env, runs)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as bin_dir:
        plugin = str(install_cni(Path(bin_dir)))
        package_parent = Path(plugin).read_text().split("sys.path.insert(0, ")[1].split(")")[0]
        cases = {
            "flannel (shim) VERSION": [plugin],
            "python -IS -c pass": [sys.executable, "-IS", "-c", "pass"],
            "python -c pass (with site)": [sys.executable, "-c", "pass"],
            "shim ADD-path imports": [
                sys.executable,
                "-IS",
                "-c",
                f"import sys; sys.path.insert(0, {package_parent}); import cni_shim.commands",
            ],
            "host-local VERSION (Go)": ["/usr/lib/cni/host-local"],
        }
        print(f"median of {runs} runs, {sys.version.split()[0]}, {sys.executable}")
        for label, cmd in cases.items():
            print(f"{label:32} {median_ms(cmd, runs):6.2f} ms")


if __name__ == "__main__":
    main()
