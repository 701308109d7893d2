"""deploy/'s alert rules on a real Prometheus (Debian's server binary, unpacked into .tools/ by
deploy/test.sh), scraping every lab agent each second: every rule fires on the real fault it is
meant for and resolves when the fault is gone, and every metric and label a rule or a dashboard
panel reads is exported by a running agent.

The rules are loaded from a copy with ``for:`` at 1 s and the rate windows shortened; the lab's
agents hold 60 s leases (so a renewal falls overdue within the test) and serve their endpoints on
the underlay too (``--healthz-port``), where Prometheus, in the etcd namespace, reaches them.
Independent faults run at once to keep the test to a few minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from faults import put_fake_peer, subnet_key, udp_dropped
from labtools import needs_lab, running_lab, wait_for

from overlayd.bench.svgplot import Mark, Series, step_chart
from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS = shutil.which("prometheus") or str(REPO / ".tools" / "prometheus")
pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="no prometheus (deploy/test.sh unpacks one)"),
]
SCRAPE_PORT = 9465
NETWORK = {"Network": "198.18.0.0/21", "Backend": {"Type": "vxlan"}}  # 7 subnets: a pool that can fill
STRANGER = "192.0.2.77"  # on the underlay, holding no lease
VXLAN_VNI_1 = bytes([0x08, 0, 0, 0, 0, 0, 1, 0])  # a VXLAN header for VNI 1, the lab's
PROM_PORT = 19090
FIRE, RESOLVE = 150.0, 150.0  # seconds; the faults' reports take seconds, a lapsed lease up to a minute


def fast_rules(source: str) -> str:
    """The shipped rules with every ``for:`` at 1 s and rate windows of seconds, not minutes."""
    text = re.sub(r"for: \d+[smh]", "for: 1s", source)
    return text.replace("[30m]", "[20s]").replace("[5m]", "[30s]")


class Prometheus:
    """A Prometheus server in the lab's etcd namespace, queried over its HTTP API."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        targets = [f"{host.ip}:{SCRAPE_PORT}" for host in lab.hosts]
        (workdir / "alerts.yml").write_text(fast_rules((DEPLOY / "prometheus/alerts.yml").read_text()))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "overlayd", "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", lab.etcd_ns, PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{PROM_PORT}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def get(self, path: str) -> dict:
        url = f"http://127.0.0.1:{PROM_PORT}{path}"
        out = sh("curl", "-sf", "--max-time", "5", url, netns=self.lab.etcd_ns, check=False)
        return json.loads(out) if out else {}

    def firing(self) -> set[tuple[str, str]] | None:
        """(alert name, instance) of every firing alert; None when Prometheus did not answer."""
        answer = self.get("/api/v1/alerts")
        if answer.get("status") != "success":
            return None
        firing = [alert["labels"] for alert in answer["data"]["alerts"] if alert["state"] == "firing"]
        return {(labels["alertname"], labels.get("instance", "")) for labels in firing}

    def up(self) -> int:
        result = self.get("/api/v1/query?query=up").get("data", {}).get("result", [])
        return sum(1 for sample in result if sample["value"][1] == "1")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)  # our own child, by its pid
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def alert_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Prometheus]]:
    args = (f"--healthz-port={SCRAPE_PORT}", "--subnet-lease-ttl=60")
    with running_lab(tmp_path_factory, hosts=3, agent_args=args, network_config=json.dumps(NETWORK)) as lab:
        # A directory of its own: pytest prunes old session directories under its shared base,
        # which other sessions on the machine can do while this one runs.
        workdir = Path(tempfile.mkdtemp(prefix="overlayd-prometheus-"))
        prometheus = Prometheus(lab, workdir)
        try:
            wait_for(lambda: prometheus.up() == 3, 60, "Prometheus to scrape all three agents")
            yield lab, prometheus
        finally:
            prometheus.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def instance(host: LabHost) -> str:
    return f"{host.ip}:{SCRAPE_PORT}"


def await_alerts(prometheus: Prometheus, expected: set[tuple[str, str]], firing: bool, what: str) -> None:
    def check() -> bool:
        now = prometheus.firing()
        if now is None:  # no answer proves nothing either way
            return False
        return expected <= now if firing else not (expected & now)

    try:
        wait_for(check, FIRE if firing else RESOLVE, what)
    except AssertionError as exc:  # say what was missing at the end, not at the start
        now = prometheus.firing() or set()
        wrong = expected - now if firing else expected & now
        state = "not firing" if firing else "still firing"
        raise AssertionError(f"{exc}; {state}: {sorted(wrong)}") from None


@contextlib.contextmanager
def deleting_routes(host: LabHost, peer: LabHost) -> Iterator[None]:
    """Someone deleting the route to ``peer``'s subnet over and over: the agent keeps repairing it."""
    stop = threading.Event()

    def churn() -> None:
        while not stop.wait(0.3):
            sh("ip", "route", "del", f"{peer.flannel_address()}/24", netns=host.netns, check=False)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def stranger_sending_vxlan(lab: Lab, target: LabHost) -> Iterator[None]:
    """VXLAN packets to ``target`` from an underlay address that holds no lease."""
    sh("ip", "addr", "add", f"{STRANGER}/32", "dev", "eth0", netns=lab.etcd_ns)
    script = (
        f"import socket, time\nVXLAN_VNI_1 = {VXLAN_VNI_1!r}\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(('{STRANGER}', 0))\nwhile True:\n"
        f"    s.sendto(VXLAN_VNI_1 + bytes(14), ('{target.ip}', 8472))\n    time.sleep(0.2)"
    )
    sender = subprocess.Popen(["ip", "netns", "exec", lab.etcd_ns, sys.executable, "-c", script])
    try:
        yield
    finally:
        sender.kill()
        sender.wait()
        sh("ip", "addr", "del", f"{STRANGER}/32", "dev", "eth0", netns=lab.etcd_ns, check=False)


def test_every_metric_and_label_a_rule_or_panel_reads_is_exported(alert_lab: tuple[Lab, Prometheus]) -> None:
    lab, _ = alert_lab
    status, text = lab.http_get(lab.hosts[0], "/metrics")
    assert status == 200
    names = set(re.findall(r"^(overlayd_\w+?)(?:\{|\s)", text, re.MULTILINE))
    labels = set(re.findall(r"(\w+)=\"", text)) | {"instance", "job", "le"}
    rules = [r["expr"] for g in yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"]
             for r in g["rules"]]  # fmt: skip
    dashboard = json.loads((DEPLOY / "grafana/overlayd-dashboard.json").read_text())
    panels = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for expr in rules + panels:
        for name in re.findall(r"overlayd_\w+", expr):
            assert name in names, f"{name} (in {expr!r}) is not in a running agent's /metrics"
        used = re.findall(r"(?:by|without) \(([^)]*)\)", expr) + re.findall(r"\{([^}]*)\}", expr)
        for group in used:
            for label in re.findall(r"(\w+)\s*(?:=~|!=|=|,|$)", group.strip()):
                if not label.startswith("$") and not label.isdigit():
                    assert label in labels, f"label {label} (in {expr!r}) is not exported"


def test_a_dropped_peer_fires_its_alert_and_resolves(alert_lab: tuple[Lab, Prometheus]) -> None:
    """One fault alone, drawn for docs/metrics.md when ``OVERLAYD_FAULT_PLOT`` names an SVG file."""
    lab, prometheus = alert_lab
    h1, h2, _ = lab.hosts
    alerts = {("OverlaydPeersUnreachable", instance(h1)), ("OverlaydPeersUnreachable", instance(h2))}
    await_alerts(prometheus, alerts, False, "a quiet start")
    started = time.time()
    with udp_dropped(h2, h1):
        await_alerts(prometheus, alerts, True, "the alert on both ends of the broken pair")
        removed = time.time()
    await_alerts(prometheus, alerts, False, "the alert to resolve")
    resolved = time.time()
    if target := os.environ.get("OVERLAYD_FAULT_PLOT"):
        time.sleep(3)  # a few points after the recovery
        marks = [Mark(started, "h1's UDP dropped at h2"), Mark(removed, "rule removed"),
                 Mark(resolved, "resolved")]  # fmt: skip
        draw(prometheus, lab, Path(target), marks)


def draw(prometheus: Prometheus, lab: Lab, target: Path, marks: list[Mark]) -> None:
    """The fault as Prometheus recorded it: each node's unreachable peers, and the alerts firing."""
    start, end = marks[0].at - 10, time.time()
    names = {instance(host): host.name for host in lab.hosts}

    def query(expr: str) -> list[dict]:
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 1})
        return prometheus.get(f"/api/v1/query_range?{query}")["data"]["result"]

    series = [
        Series(f"overlayd_peers_unreachable {names[r['metric']['instance']]}",
               tuple((float(t), float(v)) for t, v in r["values"]))
        for r in query("overlayd_peers_unreachable")
    ]  # fmt: skip
    firing = query('count(ALERTS{alertname="OverlaydPeersUnreachable",alertstate="firing"}) or vector(0)')
    points = tuple((float(t), float(v)) for t, v in firing[0]["values"])
    series.append(Series("OverlaydPeersUnreachable firing", points))
    title = "A peer's UDP dropped, then allowed again (lab, Prometheus scraping every 1 s)"
    target.write_text(step_chart(title, series, marks, "count"))


def test_etcd_down_lease_lapsing_repairs_strangers_and_a_dropped_peer_fire_and_resolve(
    alert_lab: tuple[Lab, Prometheus],
) -> None:
    lab, prometheus = alert_lab
    h1, h2, h3 = lab.hosts
    assert prometheus.firing() == set(), "a healthy lab fires nothing"
    everyone = {instance(host) for host in lab.hosts}
    expected = {
        *{(name, i) for i in everyone for name in
          ("OverlaydEtcdErrors", "OverlaydEtcdWatchDown", "OverlaydLeaseExpiringSoon", "OverlaydNotReady")},
        ("OverlaydRepairsRising", instance(h3)),
        ("OverlaydVxlanIngressDropping", instance(h2)),
        ("OverlaydPeersUnreachable", instance(h1)),
        ("OverlaydPeersUnreachable", instance(h2)),
    }  # fmt: skip
    with deleting_routes(h3, h1), stranger_sending_vxlan(lab, h2), udp_dropped(h2, h1):
        lab.stop_etcd()
        try:
            await_alerts(prometheus, expected, True, "every fault's alert to fire")
        finally:
            lab.start_etcd()
    # The dropped source stays listed for 10 minutes after its last packet; flushing the set is
    # that wait, shortened.
    sh("nft", "flush", "set", "ip", "overlayd", "vxlan_dropped", netns=h2.netns)
    await_alerts(prometheus, expected, False, "every alert to resolve")


def test_an_agent_down_a_broken_config_a_mismatch_and_a_full_pool_fire_and_resolve(
    alert_lab: tuple[Lab, Prometheus],
) -> None:
    lab, prometheus = alert_lab
    h1, _, h3 = lab.hosts
    etcd = lab.etcd()
    good = json.dumps(NETWORK)
    taken = {subnet_key(host) for host in lab.hosts}
    free = [f"198.18.{i}.0-24" for i in range(1, 8) if f"198.18.{i}.0-24" not in taken]
    lab.stop_agent(h3)
    for index, key in enumerate(free):  # every subnet of the pool leased
        put_fake_peer(lab, key, f"192.0.2.{90 + index}", f"0a:00:00:00:01:{index:02x}")
    broken = json.dumps({**NETWORK, "Backend": {"Type": "nonsense"}})
    etcd.etcdctl("put", f"{ETCD_PREFIX}/config", broken)
    first = {("OverlaydDown", instance(h3)), ("OverlaydSubnetPoolNearlyFull", ""),
             ("OverlaydNetworkConfigBroken", instance(h1))}  # fmt: skip
    try:
        await_alerts(prometheus, first, True, "down, pool, config")
        etcd.etcdctl("put", f"{ETCD_PREFIX}/config", json.dumps({**NETWORK, "Network": "198.19.0.0/21"}))
        await_alerts(prometheus, {("OverlaydNetworkConfigMismatch", instance(h1))}, True, "the mismatch")
    finally:
        etcd.etcdctl("put", f"{ETCD_PREFIX}/config", good)
        for key in free:
            etcd.etcdctl("del", f"{ETCD_PREFIX}/subnets/{key}")
        lab.start_agent(h3)
    resolved = {*first, ("OverlaydNetworkConfigMismatch", instance(h1))}
    await_alerts(prometheus, resolved, False, "all four to resolve")
