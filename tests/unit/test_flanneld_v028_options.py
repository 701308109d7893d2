"""flanneld v0.28's command line and variables: every flag it has is accepted, with its meaning or
logged as ignored; a flag it does not have is still an error naming it."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from overlayd.netfilter.firewall import FirewallSpec, render_table
from overlayd.option_sources import build_parser, normalize_argv
from overlayd.option_specs import FLANNELD_IGNORED, SPECS, flag_name
from overlayd.options import AgentOptions, resolve_options

# flanneld v0.28.7's flags (main.go's flag set, klog's -v, -vmodule and -log_backtrace_at included).
FLANNELD_V028_FLAGS = [
    "etcd-endpoints", "etcd-prefix", "etcd-keyfile", "etcd-certfile", "etcd-cafile", "etcd-username",
    "etcd-password", "iface", "iface-regex", "iface-can-reach", "subnet-file", "public-ip", "public-ipv6",
    "subnet-lease-renew-margin", "ip-masq", "ip-masq-fully-random-disable", "kube-subnet-mgr",
    "kube-api-url", "kube-annotation-prefix", "kubeconfig-file", "version", "healthz-ip", "healthz-port",
    "iptables-resync", "iptables-forward-rules", "ip-blackhole-route", "net-config-path",
    "set-node-network-unavailable", "v", "vmodule", "log_backtrace_at",
]


def resolve(argv: list[str], env: dict[str, str] | None = None) -> AgentOptions:
    parser = build_parser(argparse.ArgumentParser())
    return resolve_options(parser.parse_args(normalize_argv(argv)), env or {})


def test_every_flanneld_v028_flag_is_implemented_or_ignored_by_name() -> None:
    implemented = {flag_name(name)[2:] for name in SPECS} | {"version", "v"}
    missing = [flag for flag in FLANNELD_V028_FLAGS if flag not in implemented | set(FLANNELD_IGNORED)]
    assert missing == []


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["-ip-masq-fully-random-disable", "-ip-blackhole-route"], {}),
        (["--ip-masq-fully-random-disable=true", "--ip-blackhole-route=true"], {}),
        ([], {"FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE": "true", "FLANNELD_IP_BLACKHOLE_ROUTE": "true"}),
    ],
)
def test_the_v028_flags_are_read_from_the_command_line_and_the_environment(
    argv: list[str], env: dict[str, str]
) -> None:
    options = resolve(argv, env)
    assert options.ip_masq_fully_random_disable is True
    assert options.ip_blackhole_route is True
    assert options.ignored == ()
    defaults = resolve([])
    assert (defaults.ip_masq_fully_random_disable, defaults.ip_blackhole_route) == (False, False)


def test_fully_random_disable_takes_fully_random_off_the_masquerade_rules() -> None:
    spec = FirewallSpec(IPv4Network("198.18.0.0/16"), IPv4Network("198.18.7.0/24"), True, False)
    random = render_table(spec)
    plain = render_table(FirewallSpec(spec.network, spec.own_subnet, True, False, masq_fully_random=False))
    assert random.count("masquerade fully-random") == 2
    assert "fully-random" not in plain and plain.count("masquerade\n") == 2


def test_kube_proxy_marked_packets_return_before_any_masquerade() -> None:
    spec = FirewallSpec(IPv4Network("198.18.0.0/16"), IPv4Network("198.18.7.0/24"), True, False)
    table = render_table(spec).splitlines()
    rules = [line.strip() for line in table if "return" in line or "masquerade" in line]
    assert rules[0] == "meta mark & 0x00004000 == 0x00004000 return"


@pytest.mark.parametrize(("level", "verbose"), [("0", 0), ("1", 1), ("4", 1)])
def test_flanneld_v_variable_is_the_klog_level(level: str, verbose: int) -> None:
    assert resolve([], {"FLANNELD_V": level}).verbose == verbose
    assert resolve(["-vv"], {"FLANNELD_V": level}).verbose == 2, "the command line wins"


def test_a_bad_flanneld_v_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"option --verbose from environment variable FLANNELD_V: "):
        resolve([], {"FLANNELD_V": "loud"})


def test_default_endpoints_are_flanneld_s() -> None:
    assert resolve([]).etcd_endpoints == ("http://127.0.0.1:4001", "http://127.0.0.1:2379")


def test_unread_flanneld_variables_are_reported_by_name() -> None:
    env = {"FLANNELD_IPMASQ": "true", "FLANNELD_VERSION": "true", "FLANNELD_IP_MASQ": "true",
           "FLANNELD_V": "2", "OTHER": "x"}  # fmt: skip
    options = resolve([], env)
    assert options.ip_masq is True and options.verbose == 1
    assert options.ignored == (
        "FLANNELD_IPMASQ: no flanneld or overlayd option reads this variable",
        "FLANNELD_VERSION: flanneld checks -version before it reads variables",
    )


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``overlayd run`` against an etcd that is not there: it starts (and logs) or refuses at once."""
    state, run_dir = tmp_path / "state", tmp_path / "run"
    command = [sys.executable, "-m", "overlayd", *argv, "-etcd-endpoints=http://127.0.0.1:9",
               f"-subnet-file={run_dir}/subnet.env", f"--state-dir={state}", "--metrics-address=off"]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=8, check=False)
    except subprocess.TimeoutExpired as exc:  # it started and waits for etcd: what it logged so far
        out = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(command, -1, "", out)


def test_a_flanneld_v028_command_line_starts_and_logs_what_is_ignored(tmp_path: Path) -> None:
    done = _run(["-ip-masq", "-ip-masq-fully-random-disable", "-ip-blackhole-route", "-iptables-resync=5"],
                tmp_path)
    assert "unrecognized arguments" not in done.stderr
    assert re.search(r"ignoring flanneld option --iptables-resync=5: ", done.stderr), done.stderr


def test_a_flag_flanneld_does_not_have_fails_naming_it(tmp_path: Path) -> None:
    done = _run(["-ip-masq-fully-random-disabled"], tmp_path)
    assert done.returncode == 2
    assert "unrecognized arguments: -ip-masq-fully-random-disabled" in done.stderr
    assert "(did you mean --ip-masq-fully-random-disable?)" in done.stderr
