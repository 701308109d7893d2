"""docker-opts: the env file mk-docker-opts.sh would write, from subnet.env."""

import pytest

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
