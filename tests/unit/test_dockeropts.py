"""docker-opts: the env file mk-docker-opts.sh would write, from subnet.env."""

from pathlib import Path

import pytest

from overlayd.cli import main
from overlayd.ops.dockeropts import DockerOpts, DockerOptsError, render_docker_opts

ENV = {"FLANNEL_NETWORK": "198.18.0.0/16", "FLANNEL_SUBNET": "198.18.7.1/24", "FLANNEL_MTU": "1450",
       "FLANNEL_IPMASQ": "false"}  # fmt: skip


def test_default_writes_individual_then_combined_lines() -> None:
    assert render_docker_opts(ENV, DockerOpts(), "subnet.env") == (
        'DOCKER_OPT_BIP="--bip=198.18.7.1/24"\n'
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n'
        'DOCKER_OPT_MTU="--mtu=1450"\n'
        'DOCKER_OPTS=" --bip=198.18.7.1/24 --ip-masq=true --mtu=1450"\n'
    )


def test_docker_does_not_masquerade_when_the_agent_does() -> None:
    text = render_docker_opts({**ENV, "FLANNEL_IPMASQ": "true"}, DockerOpts(individual=False), "subnet.env")
    assert text == 'DOCKER_OPTS=" --bip=198.18.7.1/24 --ip-masq=false --mtu=1450"\n'


def test_key_individual_only_and_no_ip_masq() -> None:
    combined = render_docker_opts(
        ENV, DockerOpts(combined_key="DOCKER_NETWORK_OPTIONS", individual=False, ip_masq=False), "f"
    )
    assert combined == 'DOCKER_NETWORK_OPTIONS=" --bip=198.18.7.1/24 --mtu=1450"\n'
    individual = render_docker_opts(ENV, DockerOpts(combined=False), "f")
    assert individual.splitlines()[-1] == 'DOCKER_OPT_MTU="--mtu=1450"'
    assert "DOCKER_OPTS" not in individual


def test_missing_subnet_names_the_file_and_key() -> None:
    with pytest.raises(DockerOptsError, match=r"/run/flannel/subnet.env: FLANNEL_SUBNET missing"):
        render_docker_opts({"FLANNEL_MTU": "1450"}, DockerOpts(), "/run/flannel/subnet.env")


@pytest.mark.parametrize("key", ["DOCKER_OPTS", "DOCKER_NETWORK_OPTIONS"])
def test_options_already_in_the_environment_come_first(key: str) -> None:
    # mk-docker-opts.sh appends one space to $<key>, then " <option>" for each option.
    text = render_docker_opts(ENV, DockerOpts(combined_key=key, individual=False), "f", "--dns=192.0.2.53")
    assert text == f'{key}="--dns=192.0.2.53  --bip=198.18.7.1/24 --ip-masq=true --mtu=1450"\n'
    individual = render_docker_opts(ENV, DockerOpts(combined=False), "f", "--dns=192.0.2.53")
    assert "--dns" not in individual, "only the combined line carries them"


@pytest.mark.parametrize("value", ["yes", "TRUE", "1"])
def test_invalid_ipmasq_is_refused_naming_the_value(value: str) -> None:
    with pytest.raises(DockerOptsError, match=rf"subnet.env: invalid value of FLANNEL_IPMASQ: '{value}'; it "
                       "must be true or false"):
        render_docker_opts({**ENV, "FLANNEL_IPMASQ": value}, DockerOpts(), "subnet.env")
    # -m leaves --ip-masq out, and the script then never looks at the value.
    text = render_docker_opts({**ENV, "FLANNEL_IPMASQ": value}, DockerOpts(ip_masq=False), "subnet.env")
    assert "ip-masq" not in text


def test_command_prepends_the_environment_and_exits_1_on_a_bad_ipmasq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    subnet_env, out = tmp_path / "subnet.env", tmp_path / "docker"
    subnet_env.write_text("".join(f"{key}={value}\n" for key, value in ENV.items()))
    monkeypatch.setenv("DOCKER_NETWORK_OPTIONS", "--dns=192.0.2.53")
    argv = ["docker-opts", "-f", str(subnet_env), "-d", str(out), "-c", "-k", "DOCKER_NETWORK_OPTIONS"]
    assert main(argv) == 0
    expected = "--dns=192.0.2.53  --bip=198.18.7.1/24 --ip-masq=true --mtu=1450"
    assert out.read_text() == f'DOCKER_NETWORK_OPTIONS="{expected}"\n'
    subnet_env.write_text(subnet_env.read_text().replace("FLANNEL_IPMASQ=false", "FLANNEL_IPMASQ=maybe"))
    assert main(argv) == 1
    assert "invalid value of FLANNEL_IPMASQ: 'maybe'" in capsys.readouterr().err
    assert "--dns=192.0.2.53  --bip" in out.read_text(), "the previous file is left as it was"
