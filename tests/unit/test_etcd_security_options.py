"""Inconsistent etcd TLS and auth options stop `overlayd run` with one line that never quotes the password."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlayd.cli import main

PASSWORD = "pw-Kd71-never-shown"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([f"--etcd-password={PASSWORD}"], "--etcd-username and --etcd-password go together"),
        (
            ["--etcd-username=root", f"--etcd-password={PASSWORD}", "--etcd-endpoints=https://192.0.2.2:2379"],
            "etcd endpoint https://192.0.2.2:2379 is https but --etcd-cafile is not given",
        ),
        (
            ["--etcd-cafile={ca}", "--etcd-endpoints=http://192.0.2.2:2379"],
            "etcd endpoint http://192.0.2.2:2379 is plain http: use https:// endpoints",
        ),
        (["--etcd-cafile={ca}", "--etcd-certfile={ca}"], "--etcd-certfile and --etcd-keyfile go together"),
        (
            [f"--etcd-endpoints=http://root:{PASSWORD}@192.0.2.2:2379"],
            "endpoint 1 carries user:password@; give them with --etcd-username and --etcd-password",
        ),
        (
            ["--etcd-username=root", f"--etcd-password={PASSWORD}", "--subnet-lease-ttl=-1"],
            "--subnet-lease-ttl from command line: -1 is not positive",
        ),
        (["--config={yaml}"], "not valid YAML at line 3, column 1: found unexpected end of stream"),
    ],
)
def test_option_errors_name_the_problem_and_never_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked before the options agree\n")
    yaml_file = tmp_path / "overlayd.yaml"
    yaml_file.write_text(f'etcd-username: root\netcd-password: "{PASSWORD}\n')  # unterminated quote

    code = main(["run", *(arg.format(ca=ca, yaml=yaml_file) for arg in args)])

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and named in err
    assert PASSWORD not in err
