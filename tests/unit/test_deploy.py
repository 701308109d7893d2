"""deploy/: the unit, Prometheus files and dashboard pass the real validators and use real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from overlayd.agent.metrics import Metrics
from overlayd.backend.select import CONFIG_PARSERS
from overlayd.cli import make_parser
from overlayd.options import AgentOptions, resolve_options
from overlayd.subnet.config import parse_network_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC_RE = re.compile(r"\boverlayd_[a-z_]+\b")


def exported_names() -> set[str]:
    """Every sample name a real agent's registry can expose (counter _total, histogram parts)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def alert_exprs() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana/overlayd-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.parametrize("source", [alert_exprs, dashboard_exprs])
def test_every_metric_used_is_exported(source) -> None:  # type: ignore[no-untyped-def]
    used = {name for expr in source() for name in METRIC_RE.findall(expr)}
    assert used, "no overlayd metric found: the pattern or the file is broken"
    assert used - exported_names() == set()


def test_alerts_cover_the_operator_cases() -> None:
    exprs = " ".join(alert_exprs())
    for name in ("overlayd_lease_expiry_timestamp_seconds", "overlayd_peers_unreachable",
                 "overlayd_repairs_total", "overlayd_etcd_errors_total", 'up{job="overlayd"}',
                 "overlayd_network_config_ok", "overlayd_vxlan_ingress_dropped_sources"):  # fmt: skip
        assert name in exprs


def test_example_network_config_is_valid() -> None:
    config = parse_network_config((DEPLOY / "network-config.json").read_text(), backends=CONFIG_PARSERS)
    assert str(config.network) == "198.18.0.0/16" and config.backend.type == "vxlan"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (apt-get install prometheus)")
def test_promtool_accepts_config_and_rules() -> None:
    for args in (["check", "config", "scrape.yml"], ["check", "rules", "alerts.yml"]):
        done = subprocess.run(["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (apt-get install prometheus)")
def test_lease_alert_fires_for_a_lease_running_out_not_for_an_agent_without_one(tmp_path: Path) -> None:
    """The expiry gauge is 0 until a lease is held: that is OverlaydNotReady's case, and a lease
    "expiring in -55 years" would page for the wrong reason."""
    expiry, renew = "overlayd_lease_expiry_timestamp_seconds", "overlayd_lease_renew_timestamp_seconds"
    rule = next(r for group in yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"]
                for r in group["rules"] if r.get("alert") == "OverlaydLeaseExpiringSoon")  # fmt: skip
    annotations = {**rule["annotations"], "summary": "subnet lease of soon expires in 10m 0s"}
    case = {
        "rule_files": [str(DEPLOY / "prometheus/alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [  # promtool's clock starts at 0: expiry 1200 is 20 minutes away
                {"series": f'{expiry}{{instance="nolease"}}', "values": "0x20"},
                {"series": f'{renew}{{instance="nolease"}}', "values": "0x20"},
                {"series": f'{expiry}{{instance="soon"}}', "values": "1200x20"},  # renewal due 1h before
                {"series": f'{renew}{{instance="soon"}}', "values": "-2400x20"},
                {"series": f'{expiry}{{instance="fine"}}', "values": "90000x20"},
                {"series": f'{renew}{{instance="fine"}}', "values": "86400x20"},
            ],
            "alert_rule_test": [{
                "eval_time": "10m",
                "alertname": "OverlaydLeaseExpiringSoon",
                "exp_alerts": [{"exp_labels": {"severity": "critical", "instance": "soon"},
                                "exp_annotations": annotations}],
            }],
        }],
    }  # fmt: skip
    (tmp_path / "lease.yml").write_text(yaml.safe_dump(case))
    done = subprocess.run(["promtool", "test", "rules", "lease.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("name", ["overlayd.service", "overlayd-docker-plugin.service"])
def test_systemd_accepts_the_unit(tmp_path: Path, name: str) -> None:
    unit = (DEPLOY / name).read_text()
    assert "CAP_NET_ADMIN" in unit and "ProtectSystem=strict" in unit
    # verify checks that ExecStart's binary exists; the unit names the installed path.
    copy = tmp_path / name
    copy.write_text(unit.replace("/opt/overlayd/.venv/bin/overlayd", shutil.which("true") or "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 and name not in done.stderr, done.stderr


def test_the_unit_lets_the_agent_run_iptables() -> None:
    """The forward rules run ``iptables``: the legacy backend needs a raw socket and a writable
    /run/xtables.lock (the unit's file system is read-only), the nf_tables one netlink."""
    unit = (DEPLOY / "overlayd.service").read_text()
    settings = [line.partition("=") for line in unit.splitlines() if "=" in line and line[0] != "#"]
    values = {key: value for key, _, value in settings if key != "ExecStartPre"}
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW"} <= set(values["CapabilityBoundingSet"].split())
    assert set(values["CapabilityBoundingSet"].split()) == set(values["AmbientCapabilities"].split())
    assert "/run/xtables.lock" in values["ReadWritePaths"].split()
    pre = [value for key, _, value in settings if key == "ExecStartPre"]
    assert "+/usr/bin/touch /run/xtables.lock" in pre, "a missing lock file cannot be made writable"
    assert {"AF_INET", "AF_NETLINK"} <= set(values["RestrictAddressFamilies"].split())


def test_the_unit_takes_every_option_from_the_environment_file() -> None:
    """A command-line option would override the file's; an unset ${VAR} would expand to ''."""
    unit = (DEPLOY / "overlayd.service").read_text()
    [exec_start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == "ExecStart=/opt/overlayd/.venv/bin/overlayd run"
    assert "EnvironmentFile=-/etc/default/overlayd" in unit


def test_the_example_environment_file_gives_the_documented_options() -> None:
    lines = (DEPLOY / "overlayd.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(env) <= {f"OVERLAYD_{name.upper()}" for name in AgentOptions.__dataclass_fields__}
    options = resolve_options(make_parser().parse_args(["run"]), env)
    assert (options.etcd_endpoints, options.ip_masq, options.healthz_port) == (
        ("http://192.0.2.2:2379",), True, 9464
    )


def test_the_unit_raises_the_descriptor_limit() -> None:
    """The default soft limit of 1024 left repair failing with "Too many open files" once the
    metrics port was busy; the server holds at most MAX_CONNECTIONS per address."""
    from overlayd.agent.metrics import MAX_CONNECTIONS

    unit = (DEPLOY / "overlayd.service").read_text()
    [limit] = [line for line in unit.splitlines() if line.startswith("LimitNOFILE=")]
    assert int(limit.removeprefix("LimitNOFILE=")) >= 8 * MAX_CONNECTIONS


def test_the_docker_plugin_unit_starts_between_the_agent_and_dockerd_with_its_paths_writable() -> None:
    from overlayd.dockerplugin.server import DEFAULT_SOCKET, DEFAULT_STATE_FILE, build_parser
    from overlayd.dockerplugin.settings import HOST_LOCAL_DATA_DIR

    unit = (DEPLOY / "overlayd-docker-plugin.service").read_text()
    settings = [line.partition("=") for line in unit.splitlines() if "=" in line and line[0] != "#"]
    values = {key: value for key, _, value in settings if not key.startswith("ExecStartP")}
    assert "docker.service" in values["Before"].split() and "overlayd.service" in values["After"].split()
    command = values["ExecStart"].split()
    assert command[:2] == ["/opt/overlayd/.venv/bin/overlayd", "docker-plugin"]
    args = build_parser().parse_args(command[2:])
    assert args.socket == DEFAULT_SOCKET and str(DEFAULT_SOCKET) in unit  # ExecStartPost waits for it
    writable = {Path(path) for path in values["ReadWritePaths"].split()}
    assert {DEFAULT_SOCKET.parent, HOST_LOCAL_DATA_DIR, DEFAULT_STATE_FILE.parent} <= writable
    assert {"AF_UNIX", "AF_NETLINK"} <= set(values["RestrictAddressFamilies"].split())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_accepts_the_docker_plugin_socket_at_the_plugins_default_path(tmp_path: Path) -> None:
    from overlayd.dockerplugin.server import DEFAULT_SOCKET

    installed = shutil.which("true") or "/bin/true"
    for name in ("overlayd-docker-plugin.service", "overlayd-docker-plugin.socket"):
        text = (DEPLOY / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/overlayd/.venv/bin/overlayd", installed))
    socket_unit = (DEPLOY / "overlayd-docker-plugin.socket").read_text()
    assert f"ListenStream={DEFAULT_SOCKET}\n" in socket_unit and "Before=docker.service" in socket_unit
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "overlayd-docker-plugin.socket")],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 and "overlayd-docker-plugin" not in done.stderr, done.stderr
