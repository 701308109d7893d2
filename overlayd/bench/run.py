"""``overlayd bench``: build a lab, measure every figure of issue 6 beside its baseline, report.

Two labs under random prefixes, torn down in ``finally`` (also on Ctrl-C and SIGTERM):

- control plane: one host, a real etcd, the real ``overlayd run --ip-masq``; fake peer leases
  (``peers.py``) are written in steps up to each cold-start size; at ``--peers`` the agent's idle
  cost, event latency and churn are measured, and the CNI plugin's ADD and DEL on that host;
- data path (unless ``--no-tcp``), for each of ``--backends``: two hosts with one container each
  (the installed CNI plugin), iperf3 container → container against host → host.

``--only docker`` (a lab of its own, not part of the full run): ``docker run`` through the Docker
plugin beside Docker's bridge driver (``docker.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from overlayd.agent.holddown import HOLD_DOWN
from overlayd.backend.select import BACKENDS
from overlayd.bench import control
from overlayd.bench.cni import REFERENCE_PLUGINS, cni_add_del
from overlayd.bench.datapath import DataPath, device_made, throughput
from overlayd.bench.docker import docker_rows, docker_run_times
from overlayd.bench.families import family_rows, measure_family
from overlayd.bench.kernel import in_netns, iproute_floor
from overlayd.bench.peers import MAX_PEER_INDEX, Family, delete_peers, network_config, put_peers
from overlayd.bench.probe import probe_cost, probe_rows
from overlayd.bench.report import Results, cni_rows, event_rows, markdown, rows, splice, tcp_rows
from overlayd.bench.stats import render_table
from overlayd.bench.udpforward import udp_rounds, udp_rows
from overlayd.lab.hosts import ETCD_IP, LabHost, lab_network_config
from overlayd.lab.namespaces import Lab, random_lab_name, sh
from overlayd.lab.shell import lab_namespaces

# The backends that carry packets themselves: alloc and extension (whose data path is whatever its
# commands build) have no data path of their own to measure.
DATA_PATH_BACKENDS = [name for name, backend in BACKENDS.items() if backend.routes_traffic]

AGENT_ARGS = ["--ip-masq"]  # the recommended settings; everything else at its default
IMAGE = "img/benchmarks.png"
TRIGGERS = ("timer", "netlink", "event")  # full passes counted during the events-only run


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="overlayd bench", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add(
        "--sizes",
        default="100,1000,5000",
        help="cold-start peer counts, comma-separated (default 100,1000,5000)",
    )
    add(
        "--peers",
        type=int,
        default=1000,
        help="peers present for event latency, churn and idle (default 1000)",
    )
    add("--runs", type=int, default=5, help="cold starts (and ip -batch floors) per size (default 5)")
    add("--events", type=int, default=300, help="new peer leases put one at a time (default 300)")
    add("--event-gap", type=float, default=0.05, help="seconds between those events (default 0.05)")
    add(
        "--changes",
        type=int,
        default=100,
        help="of those peers, how many are then updated (a new MAC, then a new PublicIP) and deleted "
        "(default 100)",
    )
    add(
        "--hold-down",
        type=float,
        default=HOLD_DOWN,
        help=f"the agent's hold-down before a deleted peer's entries go: removal latency is measured "
        f"from its end (default {HOLD_DOWN}, the agent's; 0 for an agent without one)",
    )
    add(
        "--churn-rate",
        type=float,
        default=100,
        help="lease changes per second in the churn run (default 100)",
    )
    add("--churn-seconds", type=float, default=10, help="length of the churn run (default 10)")
    add(
        "--idle", type=float, default=30, help="seconds of idle measurement (default 30; the goal is over 60)"
    )
    add("--cni-runs", type=int, default=30, help="CNI ADD+DEL rounds per variant (default 30)")
    add("--docker-runs", type=int, default=20, help="docker run -d per network in --only docker (default 20)")
    add("--tcp-seconds", type=int, default=5, help="iperf3 -t per run (default 5)")
    add("--tcp-rounds", type=int, default=2, help="alternating host/container iperf3 runs (default 2)")
    add("--no-tcp", action="store_true", help="skip the data-path labs")
    add(
        "--backends",
        default=",".join(DATA_PATH_BACKENDS),
        help=f"backends whose data path is measured, a lab each, comma-separated (default: every one "
        f"that has one, {','.join(DATA_PATH_BACKENDS)})",
    )
    add(
        "--only",
        choices=["cni", "tcp", "events", "udp", "docker", "families", "probe"],
        help="measure one figure in a small lab of its own and print it (cni: CNI ADD and DEL, tcp: the data "
        "path, --tcp-rounds pairs, events: lease events at --peers, udp: the udp backend against the "
        "in-kernel one and the forwarders' CPU, --tcp-rounds pairs, docker: `docker run` through the "
        "docker plugin beside Docker's bridge driver, --docker-runs each, families: dual-stack and "
        "IPv6-only networks' cold start and IPv6 event latency at --peers against an IPv4-only one's, "
        "probe: the data path probes' CPU at --peers for --probe-seconds); not with --docs",
    )
    add("--probe-seconds", type=float, default=30.0, help="CPU measurement of the probe thread (default 30)")
    add("--no-plot", action="store_true", help="write no PNG")
    add("--docs", type=Path, help="write DOCS/benchmarks.md and DOCS/img/benchmarks.png (e.g. docs)")
    add("--cold-timeout", type=float, default=120.0, help="give up on a cold start after this many seconds")
    args = parser.parse_args(argv)
    if args.only and args.docs:
        parser.error("--only prints one figure; --docs rewrites the whole report, so run without --only")
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: use peer counts like 100,1000,5000")
    args.backends = [name.strip().lower() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in args.backends if name not in BACKENDS]
    if unknown or not args.backends:
        named = ",".join(unknown) or "(none)"
        choices = ",".join(DATA_PATH_BACKENDS)
        parser.error(f"--backends {named}: overlayd has no such backend; use some of {choices}")
    if pathless := [name for name in args.backends if name not in DATA_PATH_BACKENDS]:
        parser.error(f"--backends {','.join(pathless)}: no data path of its own to measure; use some of "
                     f"{','.join(DATA_PATH_BACKENDS)}")  # fmt: skip
    args.churn = max(1, round(args.churn_rate * args.churn_seconds))
    args.changes = min(args.changes, args.events)
    needed = max([*args.sizes, args.peers]) + args.events + args.churn
    if needed > MAX_PEER_INDEX:
        parser.error(
            f"largest size + --events + churn ({needed}) exceeds the {MAX_PEER_INDEX} subnets available"
        )
    return args


def missing_tools(args: argparse.Namespace) -> list[str]:
    without_tcp = args.no_tcp or args.only in ("cni", "events", "docker", "families", "probe")
    needs = ["etcd", "ip", "bridge"] + ([] if without_tcp else ["iperf3"])
    needs += ["dockerd", "docker"] if args.only == "docker" else []
    missing = [tool for tool in needs if shutil.which(tool) is None]
    if not (REFERENCE_PLUGINS / "bridge").exists():
        missing.append(f"{REFERENCE_PLUGINS}/bridge")
    return missing


def control_lab(root: str, results: dict, purpose: str) -> tuple[Lab, LabHost]:
    """A one-host lab with the benchmark's network config and no agent started yet."""
    lab = Lab(name=random_lab_name(), root=root, agent_args=AGENT_ARGS)
    results["labs"].append(lab)
    print(f"lab {lab.name}: {purpose}, agent {' '.join(AGENT_ARGS)}", flush=True)
    lab.up(hosts=1, network_config=network_config(), start_agents=False)
    return lab, lab.hosts[0]


@contextlib.contextmanager
def etcd_client(host: LabHost) -> Iterator[Any]:
    """An etcd client made and used inside ``host``'s namespace (this thread stays there)."""
    from overlayd.etcd.registry import etcd3  # protobuf set up as the agent uses it

    with in_netns(host.netns):
        client = etcd3.client(host=str(ETCD_IP), port=2379, timeout=10)
        try:
            yield client
        finally:
            client.close()


def control_plane(args: argparse.Namespace, root: str, results: dict) -> Lab:
    """Cold starts per size; at ``--peers`` idle, events, churn and CNI ADD. Returns the lab to tear down."""
    lab, host = control_lab(root, results, "control plane, one host")
    with etcd_client(host) as client:
        written = 0
        top = MAX_PEER_INDEX  # event and churn peers count down from the top, clear of the sizes
        event_ids = list(range(top, top - args.events, -1))
        churn_ids = list(range(top - args.events, top - args.events - args.churn, -1))
        for n in sorted({*args.sizes, args.peers}):
            put_peers(client, range(written + 1, n + 1))
            written = n
            print(f"{n} peers: ip -batch floor ...", flush=True)
            lab.stop_agent(host)  # a running agent would take its routes back from the floor's device
            results["floor"][n] = iproute_floor(list(range(1, n + 1)), args.runs)
            results["cold"][n] = []
            for k in range(args.runs):
                cold = control.cold_start(lab, host, n, args.cold_timeout)
                results["cold"][n].append(cold)
                print(
                    f"  cold start {k + 1}: subnet.env {cold.subnet_env:.3f} s, "
                    f"all entries {cold.programmed:.3f} s",
                    flush=True,
                )
            if n != args.peers:
                continue
            time.sleep(3)  # the start-up passes settle before idle is measured
            print(f"{n} peers: idle for {args.idle:.0f} s ...", flush=True)
            results["idle"] = control.idle_cost(host.pid, args.idle)
            print(f"{n} peers: {args.events} events one at a time ...", flush=True)
            results["events"] = control.event_latency(client, event_ids, args.event_gap)
            _lease_changes(args, client, event_ids, results)
            print(
                f"{n} peers: churn, {args.churn} lease changes at {args.churn_rate:.0f}/s ...", flush=True
            )
            results["churn"] = control.churn(client, churn_ids, args.churn_rate)
            delete_peers(client, event_ids + churn_ids)
            print("CNI ADD and DEL: shim + bridge, bridge alone, python -IS floors ...", flush=True)
            results["cni"] = cni_add_del(host, lab.container_ns("cniadd"), Path(host.dir), args.cni_runs)
    return lab


def _lease_changes(args: argparse.Namespace, client: object, event_ids: list[int], results: dict) -> None:
    print(
        f"{args.peers} peers: {args.changes} updates of MAC and PublicIP, then removals "
        f"(hold-down {args.hold_down:g} s) ...",
        flush=True,
    )
    changed = event_ids[: args.changes]
    results["changes"] = control.lease_changes(client, changed, args.event_gap, args.hold_down)


def events_only(args: argparse.Namespace, root: str, results: dict) -> None:
    """Lease events at ``--peers``: one host whose agent starts on that many peers, then additions
    one at a time, updates and removals (no cold starts, idle or churn)."""
    lab, host = control_lab(root, results, f"lease events at {args.peers} peers")
    with etcd_client(host) as client:
        put_peers(client, range(1, args.peers + 1))
        control.cold_start(lab, host, args.peers, args.cold_timeout)
        time.sleep(3)  # the start-up passes settle first
        event_ids = list(range(MAX_PEER_INDEX, MAX_PEER_INDEX - args.events, -1))
        passes = {t: lab.metric(host, "overlayd_reconciles_total", trigger=t) for t in TRIGGERS}
        print(f"{args.peers} peers: {args.events} events one at a time ...", flush=True)
        results["events"] = control.event_latency(client, event_ids, args.event_gap)
        _lease_changes(args, client, event_ids, results)
        delete_peers(client, event_ids)
        ran = {t: lab.metric(host, "overlayd_reconciles_total", trigger=t) - n for t, n in passes.items()}
        print(f"full passes meanwhile, by trigger: {', '.join(f'{t} {n:.0f}' for t, n in ran.items())}")


def converged_lab(root: str, results: dict, hosts: int, purpose: str, backend: str | None = None) -> Lab:
    """A lab of ``hosts`` with running agents (on ``backend``, else the lab's default), converged;
    registered in ``results`` for teardown."""
    lab = Lab(name=random_lab_name(), root=root, agent_args=AGENT_ARGS)
    results["labs"].append(lab)
    print(f"lab {lab.name}: {purpose}", flush=True)
    lab.up(hosts=hosts, **({"network_config": lab_network_config(backend)} if backend else {}))
    lab.wait_converged(timeout=60)
    return lab


def cni_only(args: argparse.Namespace, root: str, results: dict) -> None:
    """CNI ADD and DEL on one lab host whose agent holds a lease (no peers): the figures alone."""
    lab = converged_lab(root, results, 1, "one host for CNI ADD and DEL")
    host = lab.hosts[0]
    print("CNI ADD and DEL: shim + bridge, bridge alone, python -IS floors ...", flush=True)
    with in_netns(host.netns):
        results["cni"] = cni_add_del(host, lab.container_ns("cniadd"), Path(host.dir), args.cni_runs)


def docker_only(args: argparse.Namespace, root: str, results: dict) -> None:
    """``docker run`` on one lab host: the plugin's network beside Docker's bridge driver."""
    lab = converged_lab(root, results, 1, "one host with dockerd and the docker plugin")
    print(f"docker run -d: plugin and bridge networks, {args.docker_runs} runs each ...", flush=True)
    results["docker"] = docker_run_times(lab, lab.hosts[0], args.docker_runs)


def data_path(args: argparse.Namespace, root: str, results: dict) -> None:
    """The data path of each of ``--backends`` in turn, each lab down before the next is built."""
    for backend in args.backends:
        purpose = f"data path, {backend}, two hosts with a container each"
        lab = converged_lab(root, results, 2, purpose, backend)
        h1, h2 = lab.hosts
        lab.add_container(h1, "c1")
        c2_ip = lab.add_container(h2, "c2")
        print(f"TCP, {backend}: iperf3 -t {args.tcp_seconds}, {args.tcp_rounds} rounds ...", flush=True)
        tcp = throughput(
            (lab.container_ns("c1"), lab.container_ns("c2"), c2_ip),
            (h1.netns, h2.netns, h2.ip),
            args.tcp_seconds,
            args.tcp_rounds,
            Path(h1.dir),
        )
        mtu = h1.subnet_env().get("FLANNEL_MTU", "?")
        device = device_made(h1.log_file.read_text(errors="replace"))
        results.setdefault("tcp", []).append(DataPath(backend, tcp, mtu, underlay_mtu(h1), device))
        lab.down()


def underlay_mtu(host: LabHost) -> int:
    """The MTU of the host's underlay interface (eth0 in the lab)."""
    return int(json.loads(sh("ip", "-j", "link", "show", "eth0", netns=host.netns))[0]["mtu"])


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return (
        f"2 shared cores ({os.cpu_count()} CPUs visible, {model}), Linux {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def write_docs(results: Results, args: argparse.Namespace, argv: list[str]) -> None:
    from overlayd.bench.plot import INSTALL_HINT, plot_available, render_plot

    image = None
    if not args.no_plot:
        if plot_available():
            render_plot(results, args.docs / IMAGE)
            image = IMAGE
            print(f"wrote {args.docs / IMAGE}")
        else:
            print(f"no plot: matplotlib is not installed ({INSTALL_HINT})", file=sys.stderr)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    generated = markdown(results, shlex.join(["overlayd", "bench", *argv]), when, machine(), commit(), image)
    path = args.docs / "benchmarks.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(splice(path.read_text() if path.exists() else "# Benchmarks\n", generated))
    print(f"wrote {path}")


def _compile_packages() -> None:
    """Write the bytecode of overlayd and cni_shim, as an installed package has it: otherwise,
    with PYTHONDONTWRITEBYTECODE set, every agent start under test would compile its modules."""
    import compileall

    import cni_shim
    import overlayd

    for package in (overlayd, cni_shim):
        compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("overlayd bench: needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    if missing := missing_tools(args):
        print(f"overlayd bench: missing {', '.join(missing)}; run deploy/setup.sh", file=sys.stderr)
        return 2

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    _compile_packages()
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="overlayd-bench-")
    raw: dict = {"labs": [], "cold": {}, "floor": {}}
    try:
        if args.only == "cni":
            cni_only(args, root, raw)
        elif args.only == "tcp":
            data_path(args, root, raw)
        elif args.only == "events":
            events_only(args, root, raw)
        elif args.only == "probe":
            raw["probe"] = probe_cost(args.peers, args.probe_seconds)
        elif args.only == "udp":
            raw["udp"] = udp_rounds(root, raw["labs"], args.tcp_seconds, args.tcp_rounds)
        elif args.only == "docker":
            docker_only(args, root, raw)
        elif args.only == "families":
            raw["families"] = {family: measure_family(args, root, raw, AGENT_ARGS, etcd_client, family)
                               for family in Family}  # fmt: skip
        else:
            control_plane(args, root, raw).down()
            if not args.no_tcp:
                data_path(args, root, raw)
    finally:
        for lab in raw["labs"]:
            lab.down()
            if left := lab_namespaces(lab.name):
                print(f"overlayd bench: namespaces left behind: {left}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    if args.only:
        took = time.perf_counter() - started
        print(f"\noverlayd bench --only {args.only}: {machine()}; {took:.0f} s in all\n")
        if args.only == "events":
            only = event_rows(args.peers, raw["events"], raw["changes"])
        elif args.only == "probe":
            only = probe_rows(raw["probe"])
        elif args.only == "udp":
            only = udp_rows(raw["udp"], args.tcp_seconds)
        elif args.only == "docker":
            only = docker_rows(raw["docker"])
        elif args.only == "families":
            only = family_rows(args.peers, raw["families"])
        else:
            tcp = [row for path in raw.get("tcp", []) for row in tcp_rows(path)]
            only = cni_rows(raw["cni"]) if args.only == "cni" else tcp
        print(render_table(only))
        return 0
    results = Results(
        peers=args.peers,
        events=raw["events"],
        churn=raw["churn"],
        changes=raw.get("changes"),
        idle=raw["idle"],
        cold=raw["cold"],
        floor=raw["floor"],
        cni=raw.get("cni"),
        tcp=raw.get("tcp", []),
    )
    print(f"\noverlayd bench: {machine()}; {time.perf_counter() - started:.0f} s in all\n")
    print(render_table(rows(results)))
    if args.docs:
        write_docs(results, args, argv)
    return 0
