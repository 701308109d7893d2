"""``overlayd docker-plugin`` on a lab host, where that host's dockerd finds it.

The lab's dockerd sees ``<docker dir>/run-docker`` as its ``/run/docker`` (``lab/docker.py``), so
the plugin's socket goes to ``run-docker/plugins/overlayd.sock`` there. The plugin runs in the
host's network namespace (it makes the veths and the bridge there) with the host's own conflist,
so it shares the lab's CNI bridge, ``subnet.env`` and host-local store.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from overlayd.dockerplugin.server import call
from overlayd.lab.docker import LabDocker
from overlayd.lab.shell import LabError, log_tail, stop_pid

DRIVER = "overlayd"  # the socket's name: the driver's and the IPAM driver's name in dockerd


@dataclass
class LabDockerPlugin:
    netns: str
    docker_dir: Path
    conflist: Path
    pid: int = 0

    @classmethod
    def beside(cls, docker: LabDocker, conflist: Path) -> LabDockerPlugin:
        return cls(docker.netns, docker.dir, conflist)

    @property
    def socket(self) -> Path:
        return self.docker_dir / "run-docker" / "plugins" / f"{DRIVER}.sock"

    @property
    def state_file(self) -> Path:
        return self.docker_dir / "overlayd-plugin.json"

    @property
    def log_file(self) -> Path:
        return self.docker_dir / "overlayd-plugin.log"

    def start(self, timeout: float = 30.0, log_level: str = "info") -> None:
        """Start the plugin and wait until it answers ``Plugin.Activate``; LabError with its log if not."""
        self.docker_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            "ip", "netns", "exec", self.netns, sys.executable, "-m", "overlayd", "docker-plugin",
            "--socket", str(self.socket), "--conflist", str(self.conflist),
            "--state-file", str(self.state_file), "--log-level", log_level,
        ]  # fmt: skip
        with self.log_file.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)  # fmt: skip
        self.pid = process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid = 0
                raise LabError(f"docker-plugin in {self.netns} exited with {process.returncode}: "
                               f"{self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.05)
        raise LabError(f"docker-plugin in {self.netns} did not answer within {timeout:.0f}s: "
                       f"{self.log_tail()}")

    def answers(self) -> bool:
        try:
            return call(self.socket, "Plugin.Activate", None, timeout=2)[0] == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.pid:
            stop_pid(self.pid, sig, 10.0)
            self.pid = 0

    def log_tail(self) -> str:
        return log_tail(self.log_file)
