"""Traffic between lab containers that measures a fault: a continuous ping and a TCP stream.

The fault tests and the benchmarks keep traffic flowing between containers on two hosts while
they break something, then ask how much was lost and for how long. The probes are plain
``ping`` and ``iperf3`` run inside the containers' namespaces; their output goes to files (a
pipe nobody reads would stall them) and is parsed by the pure functions below.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

PING_REPLY = re.compile(r"icmp_seq=(\d+) ttl=")
IPERF_PORT = 5201


@dataclass(frozen=True)
class PingStats:
    """Replies to a continuous ping, judged up to the last answered probe.

    Probes after the last reply may still be in flight when the ping stops, so they are not
    counted as lost; a path that stayed broken shows up as ``received`` 0 or a long final gap
    (callers check the path works after the fault anyway).
    """

    sent: int  # probes up to and including the last answered one
    received: int
    longest_gap: float  # seconds: the longest run of unanswered probes times the interval

    @property
    def lost(self) -> int:
        return self.sent - self.received


def ping_stats(output: str, interval: float) -> PingStats:
    """Parse ``ping`` output (one line per reply, duplicates ignored) into PingStats."""
    answered = {int(match.group(1)) for match in PING_REPLY.finditer(output)}
    if not answered:
        return PingStats(sent=0, received=0, longest_gap=0.0)
    last = max(answered)
    longest = run = 0
    for seq in range(1, last + 1):
        run = 0 if seq in answered else run + 1
        longest = max(longest, run)
    received = len(answered & set(range(1, last + 1)))
    return PingStats(sent=last, received=received, longest_gap=longest * interval)


class PingProbe:
    """``ping -i interval target`` from ``netns`` in the background until ``stop()``."""

    def __init__(self, netns: str, target: str, output: Path, interval: float = 0.05) -> None:
        self.netns, self.target, self.output, self.interval = netns, target, output, interval
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PingProbe:
        with self.output.open("wb") as out:
            self._process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "ping", "-n", "-i", str(self.interval), "-W", "1",
                 self.target],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def stats(self) -> PingStats:
        """What the ping saw so far (it keeps running)."""
        return ping_stats(self.output.read_text(errors="replace"), self.interval)

    def stop(self) -> PingStats:
        """Stop the ping (SIGINT, as a user would) and return what it saw."""
        if self._process is not None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        return self.stats()

    def __enter__(self) -> PingProbe:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class TcpStats:
    """One iperf3 TCP stream: whether it lasted, what arrived, and its longest stall."""

    error: str  # iperf3's error ("" when the stream ran its full time)
    bytes_received: int
    retransmits: int
    stalled_seconds: int  # one-second intervals in which nothing was sent


def tcp_stats(report: str) -> TcpStats:
    """Parse ``iperf3 -J`` client output."""
    try:
        data = json.loads(report)
    except ValueError:
        return TcpStats(error=f"no JSON report from iperf3: {report[:200]!r}", bytes_received=0,
                        retransmits=0, stalled_seconds=0)  # fmt: skip
    end = data.get("end", {})
    return TcpStats(
        error=data.get("error", ""),
        bytes_received=int(end.get("sum_received", {}).get("bytes", 0)),
        retransmits=int(end.get("sum_sent", {}).get("retransmits", 0)),
        stalled_seconds=sum(1 for i in data.get("intervals", []) if i["sum"]["bytes"] == 0),
    )


class TcpProbe:
    """An iperf3 TCP stream of ``seconds`` from ``client_ns`` to a server in ``server_ns``.

    Rate-limited (``bitrate``) so the stream does not starve the agents on a small machine.
    """

    def __init__(
        self, client_ns: str, server_ns: str, server_ip: str, seconds: int, output: Path, bitrate: str = "20M"
    ) -> None:
        self.client_ns, self.server_ns, self.server_ip = client_ns, server_ns, server_ip
        self.seconds, self.output, self.bitrate = seconds, output, bitrate
        self._server: subprocess.Popen[bytes] | None = None
        self._client: subprocess.Popen[bytes] | None = None

    def start(self) -> TcpProbe:
        self._server = subprocess.Popen(
            ["ip", "netns", "exec", self.server_ns, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait_listening()
        with self.output.open("wb") as out:
            self._client = subprocess.Popen(
                ["ip", "netns", "exec", self.client_ns, "iperf3", "-c", self.server_ip, "-p", str(IPERF_PORT),
                 "-t", str(self.seconds), "-b", self.bitrate, "-J", "--connect-timeout", "3000"],
                stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def _wait_listening(self, timeout: float = 10.0) -> None:
        """Return once the server accepts connections, so the client is not refused."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listening = subprocess.run(
                ["ip", "netns", "exec", self.server_ns, "ss", "-Hltn", f"sport = :{IPERF_PORT}"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if listening.stdout.strip():
                return
            time.sleep(0.05)

    def wait(self) -> TcpStats:
        """Wait for the stream to end (its duration plus a grace period) and return its figures."""
        try:
            if self._client is not None:
                try:
                    self._client.wait(self.seconds + 30)
                except subprocess.TimeoutExpired:
                    self._client.kill()
                    self._client.wait()
        finally:
            self.close()
        return tcp_stats(self.output.read_text(errors="replace"))

    def close(self) -> None:
        """Kill whatever still runs (after a failure); safe to call twice."""
        for process in (self._client, self._server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        self._client = self._server = None
