"""What a running lab's hosts answer: all-pairs ping tables, an agent's HTTP endpoints and metrics."""

from __future__ import annotations

import subprocess
import sys
import time

from overlayd.lab.hosts import METRICS_PORT, LabHost
from overlayd.lab.shell import LabError, sh

# GET a URL, print the status line then the body; run inside a host's namespace by http_get.
_HTTP_GET = """
import sys, urllib.error, urllib.request
try:
    response = urllib.request.urlopen(sys.argv[1], timeout=5)
except urllib.error.HTTPError as error:
    response = error
print(response.status)
sys.stdout.write(response.read().decode())
"""


def http_get(host: LabHost, path: str) -> tuple[int, str]:
    """GET ``path`` (``/metrics``, ``/readyz``...) from the host's agent, inside its namespace."""
    url = f"http://127.0.0.1:{METRICS_PORT}{path}"
    status, _, body = sh(sys.executable, "-c", _HTTP_GET, url, netns=host.netns).partition("\n")
    return int(status), body


def metric(host: LabHost, name: str, **labels: str) -> float:
    """The sum of the host agent's ``name`` samples whose labels include ``labels`` (0 if none)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = http_get(host, "/metrics")
    if status != 200:
        raise LabError(f"{host.name}: /metrics answered {status}: {text.strip()}")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def ping_table(endpoints: list[tuple[str, str, str]]) -> tuple[str, bool]:
    """Ping every (name, netns, address) endpoint from every other, all at once; a text table
    ("ok"/"FAIL" per pair, sources down, targets across) and whether every pair answered."""
    probes = {
        (source, target): subprocess.Popen(ping_argv(source_ns, address, count=3, wait=1.0),
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for source, source_ns, _ in endpoints
        for target, _, address in endpoints
        if source != target and address
    }
    answered = {pair: probe.wait() == 0 for pair, probe in probes.items()}
    names = [name for name, _, _ in endpoints]
    width = max(8, *(len(n) for n in names)) + 2
    lines = ["from \\ to".ljust(14) + "".join(n.ljust(width) for n in names)]
    for source in names:
        cells = ["-" if source == t else "ok" if answered.get((source, t)) else "FAIL" for t in names]
        lines.append(f"{source} ".ljust(14) + "".join(c.ljust(width) for c in cells))
    return "\n".join(lines), all(answered.values()) and len(answered) == len(names) * (len(names) - 1)


def ping_argv(netns: str, address: str, count: int, wait: float) -> list[str]:
    """``ping`` of ``address`` from inside ``netns`` (an ``ip netns`` name, or a path such as a Docker
    container's ``/proc/<pid>/ns/net``): quiet, numeric, probes 0.2 s apart."""
    enter = ["nsenter", f"--net={netns}", "--"] if netns.startswith("/") else ["ip", "netns", "exec", netns]
    return [*enter, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(wait), address]


def wait_untentative(*namespaces: str, timeout: float = 5.0) -> None:
    """Wait until no IPv6 address in ``namespaces`` is still tentative (in duplicate detection)."""
    deadline = time.monotonic() + timeout
    for netns in namespaces:
        while sh("ip", "-6", "addr", "show", "tentative", netns=netns, check=False).strip():
            if time.monotonic() > deadline:
                raise LabError(f"{netns}: IPv6 addresses still tentative after {timeout:.0f}s")
            time.sleep(0.1)


def family_tables(
    endpoints: list[tuple[str, str, str]], legend: str, endpoints6: list[tuple[str, str, str]], title: str
) -> tuple[str, bool]:
    """The IPv4 ping table of ``endpoints`` and its ``legend``, followed by the IPv6 one of
    ``endpoints6`` under ``title`` when any has an address (a dual-stack lab); an IPv6-only lab's
    (no IPv4 address anywhere) is the IPv6 table alone. And whether every pair answered."""
    parts: list[tuple[str, bool]] = []
    if any(address for _, _, address in endpoints) or not any(address for _, _, address in endpoints6):
        table, ok = ping_table(endpoints)
        parts.append((f"{table}\n\n{legend}", ok))
    if any(address for _, _, address in endpoints6):
        table6, ok6 = ping_table(endpoints6)
        legend6 = ", ".join(f"{name}={address or None}" for name, _, address in endpoints6)
        parts.append((f"{title}:\n{table6}\n\n{legend6}", ok6))
    return "\n\n".join(text for text, _ in parts), all(ok for _, ok in parts)
