"""Agent benchmarks in the namespace lab: cold start with N peer leases, and peer event latency.

    sudo .venv/bin/python benchmarks/agent_bench.py [--peers 1000] [--events 200]

One lab host (``<random>-h1``), a real etcd, the real agent (``overlayd run``). Prints figures
and, next to each, a baseline measured in the same run on the same machine:

1. Cold start: N fake peer leases (flannel JSON, /26 subnets of 198.18.0.0/15, distinct VTEP
   MACs, PublicIP 192.0.2.100..249 repeating) are in etcd; the agent is started and we poll until
   N routes, N permanent neighbours and N FDB entries are on flannel.1. Before each run the
   agent is stopped (SIGTERM) and flannel.1, subnet.env and the state dir (VTEP MAC) are
   deleted; the agent's own etcd lease is kept, as after a reboot (it is taken over again).
   Baselines: ``ip -batch`` + ``bridge -batch`` programming the same 3N entries into a fresh
   vxlan device (the kernel/iproute2 floor), and ``python -c 'import overlayd.agent'``.
2. Event latency: with the agent converged, M new peer leases are put one at a time (each bound
   to an etcd lease); for each, the time from just before the put to the RTM_NEWROUTE for its
   subnet (a netlink subscription in the host's namespace). Baseline: put → the event arriving on
   a second etcd watch in this process. Also prints the agent's own
   ``overlayd_peer_event_apply_seconds`` histogram from /metrics.

No timing is asserted. Everything runs under a random lab prefix and is torn down in ``finally``
(also on Ctrl-C or SIGTERM). The benchmark process moves its main thread into the host's
namespace (to reach etcd at 192.0.2.2 and to read netlink there) and back before teardown.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

# Run against the checkout this file lives in (also when the venv's editable install points
# elsewhere); the agent subprocess inherits the same path via PYTHONPATH.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

from overlayd import lab as lab_module  # noqa: E402
from overlayd.lab import ETCD_IP, Lab, lab_namespaces, random_lab_name  # noqa: E402

# The port each lab host's agent serves /metrics on (named HEALTHZ_PORT in older checkouts).
METRICS_PORT = getattr(lab_module, "METRICS_PORT", getattr(lab_module, "HEALTHZ_PORT", 9464))

NETWORK = IPv4Network("198.18.0.0/15")
SUBNET_LEN = 26
NETWORK_CONFIG = f'{{"Network": "{NETWORK}", "SubnetLen": {SUBNET_LEN}, "Backend": {{"Type": "vxlan"}}}}'
PREFIX = "/coreos.com/network/subnets/"
VNI = 1
DEVICE = f"flannel.{VNI}"
TXN_OPS = 100  # etcd's default --max-txn-ops is 128
RTMGRP_IPV4_ROUTE = 0x40


# ---- the fake peers ----------------------------------------------------------------------------


def peer_subnet(i: int) -> IPv4Network:
    """The i-th /26 of the network (i >= 1: index 0 is below the default SubnetMin)."""
    size = 1 << (32 - SUBNET_LEN)
    return IPv4Network((int(NETWORK.network_address) + i * size, SUBNET_LEN))


def peer_mac(i: int) -> str:
    return f"0e:be:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def peer_ip(i: int) -> IPv4Address:
    return IPv4Address("192.0.2.100") + i % 150


def peer_kv(i: int) -> tuple[str, str]:
    from overlayd.lease import LeaseAttrs, encode_attrs, subnet_to_key

    attrs = LeaseAttrs(public_ip=peer_ip(i), vni=VNI, vtep_mac=peer_mac(i))
    return PREFIX + subnet_to_key(peer_subnet(i)), encode_attrs(attrs)


# ---- small helpers -----------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)


def counts(dev: str) -> tuple[int, int, int]:
    """(routes, permanent neighbours, FDB entries with a dst) on ``dev`` in the current netns."""
    routes = run("ip", "-4", "-o", "route", "show", "dev", dev).stdout.count("\n")
    neighs = run("ip", "-4", "neigh", "show", "dev", dev, "nud", "permanent").stdout.count("\n")
    fdbs = sum(" dst " in line for line in run("bridge", "fdb", "show", "dev", dev).stdout.splitlines())
    return routes, neighs, fdbs


CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace ``fd`` (os.setns is 3.12+ only)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter_netns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        setns(fd)
    finally:
        os.close(fd)


# ---- baselines ---------------------------------------------------------------------------------


def iproute_floor(n: int, runs: int) -> list[float]:
    """Seconds for ip -batch + bridge -batch to build a vxlan device with 3n peer entries."""
    dev = "bench0"
    ip_lines = [
        f"link add {dev} type vxlan id 4242 dev eth0 local 192.0.2.11 dstport 4799 nolearning",
        f"link set {dev} up",
    ]
    for i in range(1, n + 1):
        net = peer_subnet(i)
        ip_lines.append(f"neigh replace {net.network_address} lladdr {peer_mac(i)} dev {dev} nud permanent")
    for i in range(1, n + 1):
        net = peer_subnet(i)
        ip_lines.append(f"route replace {net} via {net.network_address} dev {dev} onlink")
    fdb_lines = [
        f"fdb replace {peer_mac(i)} dev {dev} self dst {peer_ip(i)} permanent" for i in range(1, n + 1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ip_file, fdb_file = Path(tmp, "ip.batch"), Path(tmp, "fdb.batch")
        ip_file.write_text("\n".join(ip_lines) + "\n")
        fdb_file.write_text("\n".join(fdb_lines) + "\n")
        times = []
        for _ in range(runs):
            run("ip", "link", "del", dev)
            started = time.perf_counter()
            a = run("ip", "-batch", str(ip_file))
            b = run("bridge", "-batch", str(fdb_file))
            times.append(time.perf_counter() - started)
            if a.returncode or b.returncode:
                raise RuntimeError(f"ip/bridge -batch failed: {a.stderr[:300]} {b.stderr[:300]}")
            got = counts(dev)
            if got != (n, n, n):
                raise RuntimeError(f"ip -batch floor programmed {got}, expected {n} of each")
        run("ip", "link", "del", dev)
    return times


def import_times(runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds of ``python -c pass`` and ``python -c 'import overlayd.agent'``."""
    bare, agent = [], []
    for _ in range(runs):
        for cmd, out in (("pass", bare), ("import overlayd.agent", agent)):
            started = time.perf_counter()
            done = run(sys.executable, "-c", cmd)
            out.append(time.perf_counter() - started)
            if done.returncode:
                raise RuntimeError(f"python -c {cmd!r} failed: {done.stderr[-300:]}")
    return bare, agent


# ---- etcd --------------------------------------------------------------------------------------


def write_peers(client, n: int) -> float:
    started = time.perf_counter()
    kvs = [peer_kv(i) for i in range(1, n + 1)]
    for start in range(0, n, TXN_OPS):
        chunk = kvs[start : start + TXN_OPS]
        client.transaction(compare=[], success=[client.transactions.put(k, v) for k, v in chunk], failure=[])
    return time.perf_counter() - started


# ---- 1. cold start -----------------------------------------------------------------------------

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
MILESTONES = (
    "using interface",
    "holding subnet",
    "wrote ",
    "peer snapshot",
    "resync pass: add",
    "netlink pass",
)


def log_milestones(text: str, t0_wall: float) -> list[tuple[float, str]]:
    """First log line matching each milestone, as (seconds after t0, line)."""
    found: list[tuple[float, str]] = []
    seen: set[str] = set()
    for line in text.splitlines():
        m = LOG_TIME.match(line)
        if not m:
            continue
        for key in MILESTONES:
            if key in line and key not in seen:
                seen.add(key)
                stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found.append((stamp - t0_wall, line[m.end() :].strip()[:100]))
    return found


def cold_start(
    lab: Lab, n: int, runs: int, timeout: float, profile: str | None
) -> tuple[list[float], list[list[tuple[float, str]]]]:
    """Seconds from starting the agent to all 3n entries present, per run; and log timelines.

    ``profile``: record the last run's agent with py-spy (raw collapsed stacks) into this file.
    """
    host = lab.hosts[0]
    times, timelines = [], []
    for r in range(runs):
        lab.stop_agent(host)
        run("ip", "link", "del", DEVICE)
        host.subnet_file.unlink(missing_ok=True)
        shutil.rmtree(Path(host.dir) / "state", ignore_errors=True)
        log_offset = host.log_file.stat().st_size if host.log_file.exists() else 0
        if counts(DEVICE) != (0, 0, 0):
            raise RuntimeError("flannel.1 entries left before a cold start")
        t0_wall = time.time()
        t0 = time.perf_counter()
        lab.start_agent(host)
        spy = None
        if profile and r == runs - 1:
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(host.pid),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    profile,
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        deadline = t0 + timeout
        got = (0, 0, 0)
        while True:
            routes = run("ip", "-4", "-o", "route", "show", "dev", DEVICE).stdout.count("\n")
            if routes >= n:
                got = counts(DEVICE)
                if min(got) >= n:
                    break
            now = time.perf_counter()
            if now > deadline:
                raise RuntimeError(f"cold start run {r + 1}: only {counts(DEVICE)} after {timeout:.0f}s")
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        times.append(elapsed)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        text = host.log_file.read_text(errors="replace")[log_offset:]
        timelines.append([*log_milestones(text, t0_wall), (elapsed, "all entries present (benchmark poll)")])
        print(
            f"  run {r + 1}: {fmt_ms(elapsed)} to {got[0]} routes, {got[1]} neighbours, {got[2]} FDB entries"
        )
    return times, timelines


# ---- 2. event latency --------------------------------------------------------------------------


def route_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((0, RTMGRP_IPV4_ROUTE))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(1 << 16)
        except BlockingIOError:
            return


def wait_route(sock: socket.socket, marshal, dst: IPv4Network, timeout: float) -> float | None:
    """perf_counter() when RTM_NEWROUTE for ``dst`` arrives on ``sock``; None on timeout."""
    want_dst, want_len = str(dst.network_address), dst.prefixlen
    deadline = time.perf_counter() + timeout
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                break
            arrived = time.perf_counter()
            for msg in marshal.parse(data):
                if (
                    msg.get("event") == "RTM_NEWROUTE"
                    and msg.get("dst_len") == want_len
                    and msg.get("RTA_DST") == want_dst
                ):
                    return arrived


def event_latency(client, registry, indices: list[int], gap: float) -> dict[str, list[float]]:
    """Put peer leases ``indices`` one at a time, ``gap`` seconds apart; latencies in seconds."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    marshal = MarshalRtnl()
    seen: dict[str, float] = {}
    cond = threading.Condition()

    def on_events(events) -> None:
        now = time.perf_counter()
        with cond:
            for event in events:
                seen.setdefault(event.key, now)
            cond.notify_all()

    _leases, revision = registry.list_leases()
    m = len(indices)
    cancel = registry.watch_leases(
        revision + 1, on_events, lambda exc, _compacted: print(f"  watch failed: {exc}")
    )
    sock = route_socket()
    agent, watch, put = [], [], []
    missed = 0
    try:
        time.sleep(0.5)  # the watch stream is open before the first put
        for j, i in enumerate(indices):
            key, value = peer_kv(i)
            short = key.removeprefix(PREFIX)
            etcd_lease = client.lease(600)
            drain(sock)
            t0 = time.perf_counter()
            client.put(key, value, lease=etcd_lease)
            t_put = time.perf_counter()
            t_route = wait_route(sock, marshal, peer_subnet(i), timeout=10.0)
            with cond:
                cond.wait_for(lambda key=short: key in seen, timeout=5.0)
                t_watch = seen.get(short)
            if t_route is None or t_watch is None:
                missed += 1
                print(f"  event {j + 1}: {'route' if t_route is None else 'watch'} not seen in time")
                continue
            agent.append(t_route - t0)
            watch.append(t_watch - t0)
            put.append(t_put - t0)
            if gap:
                time.sleep(gap)
    finally:
        sock.close()
        cancel()
    if missed:
        print(f"  {missed} of {m} events not observed (left out of the figures)")
    return {"agent": agent, "watch": watch, "put": put}


def metrics_text(host_ip: str) -> str:
    """The agent's /metrics page, on 127.0.0.1 or the host's IP (as the lab configures it)."""
    error: OSError | None = None
    for address in ("127.0.0.1", host_ip):
        try:
            with urllib.request.urlopen(f"http://{address}:{METRICS_PORT}/metrics", timeout=5) as response:
                return response.read().decode()
        except OSError as exc:
            error = exc
    raise RuntimeError(f"agent /metrics unreachable on port {METRICS_PORT}: {error}")


def parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample line of a Prometheus text page."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def histogram_summary(before: dict[str, float], after: dict[str, float], name: str) -> str:
    """Count, mean and bucket-bound quantiles of the observations between two scrapes."""
    count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    total = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
    if count <= 0:
        return f"{name}: no observations"
    buckets = []
    for key, value in after.items():
        m = re.fullmatch(re.escape(name) + r'_bucket\{le="([^"]+)"\}', key)
        if m:
            buckets.append((float(m.group(1)), value - before.get(key, 0)))
    buckets.sort()
    quantiles = []
    for q in (50, 90, 99):
        bound = next(le for le, cumulative in buckets if cumulative >= count * q / 100)
        quantiles.append(f"p{q} <= {fmt_ms(bound) if bound != float('inf') else '+Inf'}")
    return f"{name}: count {count:.0f}, mean {fmt_ms(total / count)}, " + ", ".join(quantiles)


def counter_deltas(before: dict[str, float], after: dict[str, float], name: str) -> str:
    parts = [
        f"{key.removeprefix(name)} +{value - before.get(key, 0):.0f}"
        for key, value in sorted(after.items())
        if key.startswith(name + "{") and value - before.get(key, 0)
    ]
    return f"{name}: " + (", ".join(parts) or "no change")


def print_latencies(lat: dict[str, list[float]]) -> None:
    if not lat["agent"]:
        return
    overhead = [a - w for a, w in zip(lat["agent"], lat["watch"], strict=True)]
    print("    from just before the put to ...      p50       p90       p99       max")
    for label, values in (
        ("put returned", lat["put"]),
        ("event on our etcd watch", lat["watch"]),
        ("route in the kernel (agent)", lat["agent"]),
        ("agent overhead (route - watch)", overhead),
    ):
        cells = "".join(f"{fmt_ms(percentile(values, p)):>10}" for p in (50, 90, 99, 100))
        print(f"    {label:<34}{cells}")
    p50 = statistics.median(lat["agent"]) / statistics.median(lat["watch"])
    p99 = percentile(lat["agent"], 99) / percentile(lat["watch"], 99)
    print(f"    ratio agent / watch: p50 {p50:.1f}x, p99 {p99:.1f}x")


# ---- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000, help="peer leases present at cold start (N)")
    parser.add_argument("--events", type=int, default=200, help="peer leases added one at a time (M)")
    parser.add_argument("--runs", type=int, default=3, help="cold start repetitions")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between events")
    parser.add_argument(
        "--isolated-events", type=int, default=50, help="further events spaced --isolated-gap apart (0: skip)"
    )
    parser.add_argument(
        "--isolated-gap",
        type=float,
        default=1.0,
        help="seconds between isolated events: longer than the agent's echo reconcile",
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="py-spy the agent during the last cold start (needs py-spy on PATH)"
    )
    parser.add_argument("--keep-going-timeout", type=float, default=120.0, help="cold start give-up time")
    args = parser.parse_args()
    n, m = args.peers, args.events
    if n + m + args.isolated_events + 2 > (1 << (SUBNET_LEN - NETWORK.prefixlen)):
        parser.error(f"--peers + --events must leave room in {NETWORK} of /{SUBNET_LEN}s")
    if os.geteuid() != 0 or shutil.which("etcd") is None:
        print("needs root and etcd (run deploy/setup.sh)", file=sys.stderr)
        return 2

    # SIGTERM tears down like Ctrl-C.
    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    root_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    root = tempfile.mkdtemp(prefix="overlayd-bench-")
    name = random_lab_name()
    lab = Lab(name=name, root=root)
    client = registry = None
    started = time.perf_counter()
    print(
        f"overlayd agent benchmark: N={n} peers, M={m} events, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}, lab {name}"
    )
    try:
        lab.up(hosts=1, network_config=NETWORK_CONFIG, start_agents=False)
        host = lab.hosts[0]
        # From here the main thread (and every subprocess and thread it starts) is in h1's netns.
        enter_netns(f"/run/netns/{host.netns}")

        print("\nbaselines")
        floor = iproute_floor(n, args.runs)
        bare, imp = import_times(5)
        print(
            f"  ip -batch + bridge -batch, device + {3 * n} entries: "
            f"median {fmt_ms(statistics.median(floor))} (runs: {', '.join(fmt_ms(t) for t in floor)})"
        )
        print(
            f"  python -c pass: median {fmt_ms(statistics.median(bare))}; "
            f"python -c 'import overlayd.agent': median {fmt_ms(statistics.median(imp))}"
        )

        # etcd3 through overlayd.registry, which sets up protobuf for it; grpc only after setns.
        from overlayd.registry import EtcdOptions, Registry, etcd3

        client = etcd3.client(host=str(ETCD_IP), port=2379, timeout=10)
        registry = Registry(EtcdOptions(endpoints=(f"http://{ETCD_IP}:2379",)))
        wrote = write_peers(client, n)
        print(f"  wrote {n} peer leases to etcd in {fmt_ms(wrote)} ({TXN_OPS} puts per txn)")

        print(
            f"\n1. cold start with {n} peer leases ({args.runs} runs; flannel.1, subnet.env, state deleted)"
        )
        cold, timelines = cold_start(lab, n, args.runs, args.keep_going_timeout, args.profile)
        floor_med = statistics.median(floor)
        print(f"  agent cold start: median {fmt_ms(statistics.median(cold))}, min {fmt_ms(min(cold))}")
        print(
            f"  ratio agent / ip -batch floor: median {statistics.median(cold) / floor_med:.1f}x, "
            f"min {min(cold) / floor_med:.1f}x"
        )
        print("  timeline of the last run (agent log, seconds after Popen):")
        for offset, line in timelines[-1]:
            print(f"    {offset:7.3f}  {line}")

        time.sleep(1.0)  # let the netlink echo pass after the cold start settle
        # Event subnets: the next free ones after the peers (the agent's own lease may be among them).
        taken = {lease.subnet for lease in registry.list_leases()[0]}
        free = (i for i in range(n + 1, 1 << (SUBNET_LEN - NETWORK.prefixlen)) if peer_subnet(i) not in taken)
        phases = [(f"{m} new peer leases, one at a time, {args.gap}s apart", m, args.gap)]
        if args.isolated_events:
            phases.append(
                (
                    f"{args.isolated_events} more, {args.isolated_gap}s apart (isolated)",
                    args.isolated_events,
                    args.isolated_gap,
                )
            )
        print("\n2. event latency")
        for title, count, gap in phases:
            indices = [next(free) for _ in range(count)]
            b = parse_metrics(metrics_text(host.ip))
            lat = event_latency(client, registry, indices, gap)
            a = parse_metrics(metrics_text(host.ip))
            print(f"  {title}")
            print_latencies(lat)
            print("  agent /metrics over these events:")
            print("    " + histogram_summary(b, a, "overlayd_peer_event_apply_seconds"))
            print("    " + histogram_summary(b, a, "overlayd_reconcile_duration_seconds"))
            print("    " + counter_deltas(b, a, "overlayd_reconciles_total"))
    finally:
        for closer in (registry.close if registry else None, client.close if client else None):
            if closer:
                try:
                    closer()
                except Exception as exc:
                    print(f"closing etcd client: {exc!r}", file=sys.stderr)
        try:
            setns(root_ns)
        finally:
            os.close(root_ns)
            lab.down()
        shutil.rmtree(root, ignore_errors=True)
        left = lab_namespaces(name)
        print(
            f"\nlab {name} removed; namespaces left: {left or 'none'}; "
            f"total {time.perf_counter() - started:.0f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
