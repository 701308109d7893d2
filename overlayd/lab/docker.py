"""A real dockerd inside a lab host's network namespace, for tests that need Docker's own firewall.

``ip netns exec`` cannot host dockerd: it remounts ``/sys`` and the cgroup v1 mounts vanish
("Devices cgroup isn't mounted"). So dockerd runs under ``nsenter --net`` and its own private mount
namespace (``unshare -m``), where a per-host directory is bound over ``/run/docker`` (the plugin
directory) and ``/run/containerd`` (the shims' sockets), and a fresh sysfs (showing the host's
interfaces) is mounted on ``/sys`` with the cgroup tree moved back on top of it. Everything else a
dockerd keeps (data root, exec root, pid file, socket, config, key) lives under the lab host's
directory, and its containers under a cgroup parent named after the host's namespace, so
``destroy`` finds every process and directory it made even after a failed test. dockerd starts
its own containerd inside that mount namespace.

The root namespace's firewall and ``/var/lib/docker`` are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from overlayd.lab.shell import LabError, log_tail, stop_pid

CGROUP_ROOT = Path("/sys/fs/cgroup")
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: runs without any library in the image
IMAGE = "overlayd-lab-busybox"

# Runs as the mount namespace's first process, then becomes dockerd. $1: the host's docker dir.
_START = r"""
set -e
d=$1; shift
mkdir -p /run/docker /run/containerd "$d/run-docker" "$d/run-containerd" "$d/cgroup-aside"
mount --bind "$d/run-docker" /run/docker
mount --bind "$d/run-containerd" /run/containerd
mount --rbind /sys/fs/cgroup "$d/cgroup-aside"
mount -t sysfs sysfs /sys
mount --move "$d/cgroup-aside" /sys/fs/cgroup
exec "$@"
"""


class DockerUnavailable(LabError):
    """dockerd is not installed or could not start here; the message says why."""


@dataclass
class LabDocker:
    """One dockerd (and its containerd) in network namespace ``netns``, state under ``dir``."""

    netns: str
    dir: Path
    pid: int = 0

    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def log_file(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def cgroup_parent(self) -> str:
        return f"overlayd-lab-{self.netns}"

    def start(self, daemon_args: tuple[str, ...] = (), timeout: float = 60.0) -> None:
        """Start dockerd with ``daemon_args`` (e.g. ``--bip`` from ``overlayd docker-opts``) and wait
        until it answers; DockerUnavailable (with its log's tail) if it exits or never answers."""
        dockerd = shutil.which("dockerd")
        if dockerd is None or shutil.which("docker") is None:
            raise DockerUnavailable("dockerd or docker is not installed (run deploy/setup.sh: docker.io)")
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "daemon.json"
        config.write_text(json.dumps({
            "deprecated-key-path": str(self.dir / "key.json"),  # not /etc/docker/key.json
            "cgroup-parent": f"/{self.cgroup_parent}",
        }))  # fmt: skip
        argv = [
            "nsenter", f"--net=/run/netns/{self.netns}", "--",
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", _START, "start", str(self.dir),
            dockerd, f"--data-root={self.dir / 'data'}", f"--exec-root={self.dir / 'x'}",
            f"--pidfile={self.dir / 'dockerd.pid'}", f"--host=unix://{self.socket}",
            f"--config-file={config}", *daemon_args,
        ]  # fmt: skip
        with self.log_file.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid = 0
                raise DockerUnavailable(f"dockerd in {self.netns} exited with status {process.returncode}: "
                                        f"{self._log_tail()}")
            if self._client("version", check=False).returncode == 0:
                self.remember_mount_ns()
                return
            time.sleep(0.2)
        raise DockerUnavailable(f"dockerd in {self.netns} did not answer within {timeout:.0f}s: "
                                f"{self._log_tail()}")

    def docker(self, *args: str, timeout: float = 60) -> str:
        """Run the docker client against this dockerd; its stdout, LabError naming the failure."""
        done = self._client(*args, timeout=timeout)
        return done.stdout

    def import_busybox(self) -> str:
        """Make the image ``IMAGE`` offline: a rootfs of busybox-static and its applet links."""
        if not BUSYBOX.exists():
            raise DockerUnavailable(f"{BUSYBOX} is missing (run deploy/setup.sh: busybox-static)")
        with tempfile.TemporaryDirectory(dir=self.dir) as rootfs:
            bin_dir = Path(rootfs) / "bin"
            bin_dir.mkdir()
            shutil.copy2(BUSYBOX, bin_dir / "busybox")
            applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
            for applet in applets.stdout.split():
                if applet != "busybox":
                    (bin_dir / applet).symlink_to("busybox")
            tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            done = subprocess.run(["docker", "-H", f"unix://{self.socket}", "import", "-", IMAGE],
                                  stdin=tar.stdout, capture_output=True, text=True, check=False)
            tar.wait()
        if done.returncode != 0:
            raise LabError(f"docker import in {self.netns} failed: {done.stderr.strip()}")
        return IMAGE

    def run(self, name: str, *options: str) -> str:
        """Start a long-running container ``name`` of the busybox image; its address on docker0
        (empty for ``--net=none``)."""
        self.docker("run", "-d", "--name", name, *options, IMAGE, "/bin/sleep", "3600")
        return self.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).strip()

    def container_pid(self, name: str) -> int:
        return int(self.docker("inspect", "-f", "{{.State.Pid}}", name))

    def stop(self, timeout: float = 30.0) -> None:
        """Remove every container, then stop dockerd (which stops its containerd)."""
        if not self.pid:
            return
        if self.socket.exists():
            ids = self._client("ps", "-aq", check=False).stdout.split()
            if ids:
                self._client("rm", "-f", *ids, check=False)
        stop_pid(self.pid, signal.SIGTERM, timeout)
        self.pid = 0

    def destroy(self) -> None:
        """Stop everything this dockerd left (containers, shims, containerd, dockerd), then delete its
        cgroups and directories. Safe to call after a failure, or twice."""
        with contextlib.suppress(LabError, OSError, subprocess.SubprocessError):
            self.stop(timeout=15)
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.leftover_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for cgroup in sorted(CGROUP_ROOT.glob(f"*/{self.cgroup_parent}/**/"), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        shutil.rmtree(self.dir, ignore_errors=True)

    def leftover_pids(self) -> set[int]:
        """Processes of this dockerd: in its containers' cgroups, or started from its data dirs."""
        pids: set[int] = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cgroups = (proc / "cgroup").read_text()
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"/{self.cgroup_parent}/" in cgroups or str(self.dir) in cmdline or self._in_mount_ns(proc):
                pids.add(int(proc.name))
        return pids

    def _in_mount_ns(self, proc: Path) -> bool:
        """Whether ``proc`` shares the mount namespace dockerd was started in (containerd, shims)."""
        marker = self.dir / "mnt-ns"
        try:
            return marker.exists() and os.readlink(proc / "ns" / "mnt") == marker.read_text()
        except OSError:
            return False

    def remember_mount_ns(self) -> None:
        """Record dockerd's mount namespace, so ``destroy`` finds containerd and its shims."""
        if self.pid:
            (self.dir / "mnt-ns").write_text(os.readlink(f"/proc/{self.pid}/ns/mnt"))

    def _client(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker", "-H", f"unix://{self.socket}", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise LabError(f"{' '.join(command)} in {self.netns} failed: {done.stderr.strip()}")
        return done

    def _log_tail(self) -> str:
        return log_tail(self.log_file)
