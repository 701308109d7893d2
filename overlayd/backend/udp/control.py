"""The agent's side of the forwarder: find the running one or start it, ask it, stop it.

A forwarder is re-attached when it is the one the agent would start (same code, device, address
and port), else stopped and replaced. The agent's own children are reaped here; one left by an
earlier agent belongs to init once that agent is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

from overlayd.backend.api import BackendError
from overlayd.backend.udp.forwarder import CONTROL_MESSAGE, SO_SNDBUFFORCE, code_id, control_address

log = logging.getLogger(__name__)

START_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0
REQUEST_TIMEOUT = 2.0


@dataclass(frozen=True)
class ForwarderSpec:
    """The forwarder this host should run."""

    device: str
    bind: IPv4Address  # the external interface's own address (behind NAT: not the PublicIP)
    port: int

    def matches(self, hello: dict[str, object]) -> bool:
        """Whether the forwarder that said ``hello`` is the one this spec would start now: the code
        on disk (not the agent's, loaded earlier: an agent running on while its package is
        upgraded would otherwise replace every forwarder it starts), device, address and port."""
        return (hello.get("code"), hello.get("device"), hello.get("bind"), hello.get("port")) == (
            code_id(), self.device, str(self.bind), self.port,
        )  # fmt: skip


def request(device: str, message: dict[str, object], timeout: float = REQUEST_TIMEOUT) -> dict | None:
    """The forwarder of ``device``'s answer to ``message``; None if none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as conn:
        conn.settimeout(timeout)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, CONTROL_MESSAGE)
        try:
            conn.connect(control_address(device))
            conn.send(json.dumps(message, separators=(",", ":")).encode())
            raw = conn.recv(CONTROL_MESSAGE)
        except OSError:
            return None
    try:
        reply = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(reply, dict):
        return None
    if "error" in reply:
        raise BackendError(f"udp forwarder of {device}: {reply['error']}")
    return reply


class ForwarderKeeper:
    """Keeps one forwarder running as ``spec`` says."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None

    def ensure(self, spec: ForwarderSpec, actions: list[str]) -> dict:
        """The running forwarder's hello, after starting or replacing it as needed."""
        self._reap()
        hello = request(spec.device, {"op": "hello"})
        if hello is not None and spec.matches(hello):
            return hello
        if hello is not None:
            log.info("udp forwarder of %s (pid %s) runs other code or settings; replacing it",
                     spec.device, hello.get("pid"))  # fmt: skip
            self.stop(spec.device)
            actions.append(f"replaced the forwarder of {spec.device}")
        else:
            actions.append(f"started the forwarder of {spec.device}")
        return self._start(spec)

    def _start(self, spec: ForwarderSpec) -> dict:
        argv = [sys.executable, "-m", "overlayd.backend.udp.forwarder", "--device", spec.device,
                "--bind", str(spec.bind), "--port", str(spec.port)]  # fmt: skip
        # A session of its own: a signal to the agent's process group (a terminal's ^C, a
        # restart) is not the forwarder's, and the data path stays up while the agent restarts.
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        self.child = child
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            hello = request(spec.device, {"op": "hello"})
            if hello is not None:
                log.info("udp forwarder of %s started (pid %s, %s:%d)", spec.device, child.pid, spec.bind,
                         spec.port)  # fmt: skip
                return hello
            code = child.poll()
            if code is not None:
                self.child = None
                raise BackendError(
                    f"udp forwarder of {spec.device} exited at start with code {code} (its message is "
                    f"logged above); is UDP port {spec.port} on {spec.bind} taken, or /dev/net/tun missing?"
                )
            time.sleep(0.02)
        raise BackendError(f"udp forwarder of {spec.device} did not answer within {START_TIMEOUT:.0f} s")

    def stop(self, device: str) -> bool:
        """Stop the forwarder of ``device``, if one runs; True if one did."""
        hello = request(device, {"op": "hello"})
        if hello is None:
            return False
        pid = int(str(hello.get("pid")))
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and request(device, {"op": "hello"}, 0.2) is not None:
            time.sleep(0.02)
        if self.child is not None and self.child.pid == pid:  # ours: reaped, not reported as a crash
            self.child.wait(STOP_TIMEOUT)
            self.child = None
        return True

    def _reap(self) -> None:
        if self.child is not None and self.child.poll() is not None:
            log.warning("udp forwarder (pid %d) exited with code %s; starting it again",
                        self.child.pid, self.child.returncode)  # fmt: skip
            self.child = None
