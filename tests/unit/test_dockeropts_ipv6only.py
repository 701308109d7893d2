"""docker-opts of an IPv6-only network (subnet.env without FLANNEL_SUBNET): what flannel's
mk-docker-opts.sh writes for the same file, byte for byte (no --bip), with a notice saying why."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from overlayd.cli import main
from overlayd.ops.dockeropts import DockerOpts, DockerOptsError, ipv6_only_notice, render_docker_opts

ENV = {"FLANNEL_IPV6_NETWORK": "2001:db8:1000::/48", "FLANNEL_IPV6_SUBNET": "2001:db8:1000:5::1/64",
       "FLANNEL_MTU": "1430", "FLANNEL_IPMASQ": "true"}  # fmt: skip
FLANNEL = Path("/work/.mirror/flannel-io+flannel/repo")


def test_an_ipv6_only_file_gives_no_bip_and_the_rest_as_usual() -> None:
    assert render_docker_opts(ENV, DockerOpts(), "subnet.env") == (
        'DOCKER_OPT_IPMASQ="--ip-masq=false"\n'
        'DOCKER_OPT_MTU="--mtu=1430"\n'
        'DOCKER_OPTS=" --ip-masq=false --mtu=1430"\n'
    )
    assert (
        render_docker_opts(ENV, DockerOpts(individual=False, ip_masq=False), "f")
        == 'DOCKER_OPTS=" --mtu=1430"\n'
    )


def test_an_ipv6_only_file_still_needs_its_mtu() -> None:
    without_mtu = {key: value for key, value in ENV.items() if key != "FLANNEL_MTU"}
    with pytest.raises(DockerOptsError, match=r"^subnet.env: FLANNEL_MTU missing; wait for the agent"):
        render_docker_opts(without_mtu, DockerOpts(), "subnet.env")


def test_an_ipv4_file_without_its_subnet_is_still_refused() -> None:
    """A dual-stack or IPv4 file that lost FLANNEL_SUBNET is not taken for an IPv6-only one."""
    broken = {**ENV, "FLANNEL_NETWORK": "198.18.0.0/16"}
    with pytest.raises(DockerOptsError, match=r"FLANNEL_SUBNET missing"):
        render_docker_opts(broken, DockerOpts(), "subnet.env")
    assert ipv6_only_notice(broken, "subnet.env") is None


def flannel_script(tmp_path: Path) -> Path:
    if shutil.which("git") is None or not FLANNEL.exists():
        pytest.skip("flannel's source mirror is not on this machine")
    script = tmp_path / "mk-docker-opts.sh"
    script.write_bytes(subprocess.run(["git", "-C", str(FLANNEL), "show", "v0.20.2:dist/mk-docker-opts.sh"],
                                      capture_output=True, check=True).stdout)  # fmt: skip
    return script


@pytest.mark.parametrize("flags", [[], ["-c"], ["-i"], ["-m", "-k", "DOCKER_NETWORK_OPTIONS"]])
def test_the_command_writes_what_mk_docker_opts_sh_writes(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("DOCKER_OPTS", "DOCKER_NETWORK_OPTIONS"):  # the script runs without them too
        monkeypatch.delenv(key, raising=False)
    subnet_env = tmp_path / "subnet.env"
    subnet_env.write_text("".join(f"{key}={value}\n" for key, value in ENV.items()))
    theirs, ours = tmp_path / "theirs.env", tmp_path / "ours.env"
    env = {"PATH": "/usr/bin:/bin"}
    subprocess.run(["sh", str(flannel_script(tmp_path)), "-f", str(subnet_env), "-d", str(theirs), *flags],
                   env=env, check=True)  # fmt: skip
    assert main(["docker-opts", "-f", str(subnet_env), "-d", str(ours), *flags]) == 0
    assert ours.read_text() == theirs.read_text()
    assert "--bip" not in ours.read_text()
    err = capsys.readouterr().err
    assert "is an IPv6-only network's (FLANNEL_IPV6_SUBNET 2001:db8:1000:5::1/64, no FLANNEL_SUBNET)" in err
    assert "--fixed-cidr-v6" in err
