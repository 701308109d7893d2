"""Agent options: flanneld spellings, environment, YAML file, precedence and clear errors."""

import argparse
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from overlayd.option_sources import build_parser, normalize_argv
from overlayd.options import AgentOptions, OptionsError, resolve_options


def resolve(argv: list[str], env: dict[str, str] | None = None) -> AgentOptions:
    parser = build_parser(argparse.ArgumentParser())
    return resolve_options(parser.parse_args(normalize_argv(argv)), env or {})


def test_defaults_match_flanneld() -> None:
    options = resolve([])
    assert options.etcd_prefix == "/coreos.com/network"
    assert options.subnet_file == Path("/run/flannel/subnet.env")
    assert options.subnet_lease_renew_margin == 60
    assert options.ip_masq is False
    assert options.iptables_forward_rules is True
    assert options.state_dir == Path("/var/lib/overlayd")


def test_single_and_double_dash_spellings() -> None:
    options = resolve(
        [
            "-etcd-endpoints=http://192.0.2.2:2379,http://192.0.2.3:2379",
            "--etcd-prefix",
            "/x/network",
            "-iface=eth1",
            "--iface",
            "192.0.2.11",
            "-ip-masq",
            "--iptables-forward-rules=false",
            "-public-ip=192.0.2.11",
        ]
    )
    assert options.etcd_endpoints == ("http://192.0.2.2:2379", "http://192.0.2.3:2379")
    assert options.etcd_prefix == "/x/network"
    assert options.iface == ("eth1", "192.0.2.11")
    assert options.ip_masq is True
    assert options.iptables_forward_rules is False
    assert options.public_ip == IPv4Address("192.0.2.11")


def test_environment_both_styles_and_precedence() -> None:
    env = {
        "FLANNELD_ETCD_PREFIX": "/flannel/network",
        "FLANNELD_IFACE": "eth1,eth2",
        "OVERLAYD_IP_MASQ": "true",
        "FLANNELD_IP_MASQ": "false",  # OVERLAYD_ wins over FLANNELD_
    }
    options = resolve([], env)
    assert options.etcd_prefix == "/flannel/network"
    assert options.iface == ("eth1", "eth2")
    assert options.ip_masq is True
    assert resolve(["--etcd-prefix=/cli/network"], env).etcd_prefix == "/cli/network"


def test_yaml_file_below_environment(tmp_path: Path) -> None:
    config = tmp_path / "overlayd.yaml"
    config.write_text("etcd-prefix: /file/network\nhealthz_port: 9464\niface: [eth3]\nip-masq: true\n")
    options = resolve([f"--config={config}"])
    assert (options.etcd_prefix, options.healthz_port, options.iface, options.ip_masq) == (
        "/file/network",
        9464,
        ("eth3",),
        True,
    )
    assert resolve([f"--config={config}"], {"OVERLAYD_HEALTHZ_PORT": "1"}).healthz_port == 1


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--subnet-lease-renew-margin=0"], {}, "--subnet-lease-renew-margin from command line: 0 minutes"),
        (["--etcd-endpoints=http://192.0.2.2:2379/v3"], {}, "'http://192.0.2.2:2379/v3' is not a URL"),
        (["--public-ip=198.18.0.300"], {}, "--public-ip"),
        ([], {"FLANNELD_IP_MASQ": "maybe"}, "environment variable FLANNELD_IP_MASQ: 'maybe' is not true"),
        (["--healthz-port=70000"], {}, "70000 is not a port number"),
        (["--log-level=loud"], {}, "'loud' is not one of debug"),
    ],
)
def test_bad_values_name_option_and_source(argv: list[str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(OptionsError) as caught:
        resolve(argv, env)
    assert needle in str(caught.value)


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("etcd-endpoint: http://192.0.2.2:2379\n")
    with pytest.raises(OptionsError, match=r"bad\.yaml: unknown option 'etcd-endpoint'; known options: "):
        resolve([f"--config={bad_key}"])
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("a: [\n")
    with pytest.raises(OptionsError, match=r"broken\.yaml: not valid YAML"):
        resolve([f"--config={not_yaml}"])
    with pytest.raises(OptionsError, match="fix the path given to --config"):
        resolve([f"--config={tmp_path / 'absent.yaml'}"])


def test_metrics_address() -> None:
    assert resolve([]).metrics_address == ("127.0.0.1", 9464)
    assert resolve(["--metrics-address=0.0.0.0:9100"]).metrics_address == ("0.0.0.0", 9100)
    assert resolve(["--metrics-address=[::1]:9100"]).metrics_address == ("::1", 9100)
    assert resolve(["--metrics-address=off"]).metrics_address is None
    assert resolve(["--metrics-address="]).metrics_address is None
    assert resolve([], {"OVERLAYD_METRICS_ADDRESS": "off"}).metrics_address is None
    for bad in ("localhost:9464", "127.0.0.1", "127.0.0.1:99999"):
        with pytest.raises(OptionsError, match=r"--metrics-address from command line: .* is not IP:PORT"):
            resolve([f"--metrics-address={bad}"])


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["-v=0"], 0),
        (["--v=0"], 0),
        (["-v=2"], 1),  # flanneld's klog level: any level from 1 is overlayd's -v
        (["--v", "4"], 1),
        (["-v", "0"], 0),
        (["-v"], 1),
        (["-vv"], 2),
    ],
)
def test_klog_verbosity_levels(argv: list[str], verbose: int) -> None:
    assert resolve(argv).verbose == verbose


def test_flanneld_options_without_effect_are_accepted_and_reported() -> None:
    """A flanneld unit's options start the agent; each is reported with why it does nothing."""
    options = resolve(
        ["-iptables-resync=5", "--kube-subnet-mgr=false", "-net-config-path",
         "/etc/kube-flannel/net-conf.json", "-vmodule=vxlan=3",
         "-persistent-mac", "-ip-masq"]
    )  # fmt: skip
    assert options.ip_masq is True
    assert options.ignored == (
        "--iptables-resync=5: the nftables table is checked on every reconcile pass",
        "--kube-subnet-mgr=false: overlayd takes subnets from etcd",
        "--net-config-path=/etc/kube-flannel/net-conf.json: it only applies with --kube-subnet-mgr; "
        "overlayd takes subnets from etcd",
        "--persistent-mac=true: the VTEP MAC is always kept, in --state-dir",
        "--vmodule=vxlan=3: a klog setting; use -v or --log-level",
    )
    assert resolve([]).ignored == ()


@pytest.mark.parametrize(
    ("argv", "env", "source"),
    [
        (["--kube-subnet-mgr"], {}, "command line"),
        (["-kube-subnet-mgr=true"], {}, "command line"),
        ([], {"FLANNELD_KUBE_SUBNET_MGR": "true"}, "environment variable FLANNELD_KUBE_SUBNET_MGR"),
    ],
)
def test_kube_subnet_manager_is_refused_with_the_fix(
    argv: list[str], env: dict[str, str], source: str
) -> None:
    with pytest.raises(OptionsError, match=rf"from {source}: overlayd takes subnets from etcd only, not"):
        resolve(argv, env)


def test_flanneld_variables_without_effect_are_reported_too() -> None:
    """A flanneld environment file is read as flanneld reads it: FLANNELD_<NAME> for every option."""
    env = {"FLANNELD_IPTABLES_RESYNC": "5", "FLANNELD_KUBE_SUBNET_MGR": "false"}
    assert resolve([], env).ignored == (
        "--iptables-resync=5: the nftables table is checked on every reconcile pass",
        "--kube-subnet-mgr=false: overlayd takes subnets from etcd",
    )


def test_endpoints_without_a_scheme_as_etcds_go_client_reads_them() -> None:
    """flanneld hands --etcd-endpoints to etcd's Go client, which takes host:port: plain, or TLS
    when TLS files are given (that half, which needs real PEM files, is in test_etcd_security_options)."""
    assert resolve(["--etcd-endpoints=192.0.2.2:2379,http://192.0.2.3:2379"]).etcd_endpoints == (
        "http://192.0.2.2:2379",
        "http://192.0.2.3:2379",
    )


def test_an_iface_regex_from_the_environment_or_file_is_one_regex_commas_and_all(tmp_path: Path) -> None:
    """flanneld reads FLANNELD_IFACE_REGEX whole; split at its commas it matched nothing."""
    regex = "^(eth|ens)[0-9]{1,2}$"
    assert resolve([], {"FLANNELD_IFACE_REGEX": regex}).iface_regex == (regex,)
    config = tmp_path / "overlayd.yaml"
    config.write_text(f'iface-regex: "{regex}"\n')
    assert resolve([f"--config={config}"]).iface_regex == (regex,)
    assert resolve([], {"FLANNELD_IFACE": "eth1,eth2"}).iface == ("eth1", "eth2")  # names have no commas


def test_public_ipv6_and_an_ipv6_iface_can_reach_are_read() -> None:
    options = resolve(["-public-ipv6=2001:db8::1", "--iface-can-reach=2001:db8::9"])
    assert options.public_ipv6 == IPv6Address("2001:db8::1")
    assert options.interface_choice().can_reach == IPv6Address("2001:db8::9")
    assert resolve(["--public-ipv6="]).public_ipv6 is None
    with pytest.raises(OptionsError, match="--public-ipv6"):
        resolve(["--public-ipv6=192.0.2.1"])


def test_an_empty_public_ip_or_iface_can_reach_is_unset_as_in_flanneld() -> None:
    options = resolve(["--public-ip=", "--iface-can-reach="])
    assert (options.public_ip, options.iface_can_reach) == (None, None)


def test_a_healthz_ip_that_is_no_ip_address_is_an_option_error() -> None:
    """A host name failed only when binding, an exit the unit restarts every few seconds."""
    with pytest.raises(OptionsError, match=r"--healthz-ip from command line: 'node1.invalid'"):
        resolve(["--healthz-ip=node1.invalid", "--healthz-port=8471"])
    assert resolve(["--healthz-ip=192.0.2.11"]).healthz_ip == "192.0.2.11"


def test_flanneld_single_dash_help_is_help() -> None:
    assert normalize_argv(["-help"]) == ["--help"]
