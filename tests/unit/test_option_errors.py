"""Bad options stop ``overlayd run`` at once: one line naming the value, exit code 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from overlayd.cli import make_parser
from overlayd.option_sources import normalize_argv
from overlayd.options import OptionsError, resolve_options


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("--etcd-cafile={tmp}/missing-ca.pem", "missing-ca.pem"),
        ("--etcd-certfile={tmp}", "Is a directory"),
        ("--etcd-keyfile={tmp}/no/key.pem", "key.pem"),
        ("--etcd-endpoints=ftp://192.0.2.2:2379", "ftp://192.0.2.2:2379"),
        ("--config={tmp}/bad.yaml", "no-such-option"),
        ("--no-such-option=1", "unrecognized arguments: --no-such-option=<value>"),
        ("--etcd-pasword=hunter2", "--etcd-pasword=<value> (did you mean --etcd-password?)"),
        ("--etcd-endpoint=http://192.0.2.2:2379", "--etcd-endpoint="),  # no silent abbreviation
        ("-iface", "expected one argument"),
        ("--etcd-pasword hunter2", "--etcd-pasword (did you mean --etcd-password?) <value>"),
        ("stray", "unrecognized arguments: 'stray'"),  # a word after no unknown option is no secret
        # A password split into words (an unquoted variable in a unit file) must not show.
        ("--etcd-password=correct horse battery", "unrecognized arguments: <value> <value>"),
        ("--etcd-password= hunter2", "unrecognized arguments: <value>"),
        ("--etcd-pasword=correct hunter2", "--etcd-pasword=<value> (did you mean --etcd-password?) <value>"),
    ],
)
def test_bad_option_is_one_line_exit_2_and_touches_nothing(tmp_path: Path, option: str, named: str) -> None:
    (tmp_path / "bad.yaml").write_text("no-such-option: 1\n")
    run_dir, state_dir = tmp_path / "run", tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "overlayd", "run", *option.format(tmp=tmp_path).split(" "),
         f"--subnet-file={run_dir}/subnet.env", f"--state-dir={state_dir}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and named in done.stderr
    assert "hunter2" not in done.stderr  # a mistyped option's value may be a secret
    assert not run_dir.exists() and not state_dir.exists()


def test_a_closed_pipe_ends_a_command_without_a_traceback() -> None:
    """``overlayd config validate FILE | head -1``: the reader going away is not a crash."""
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    command = [sys.executable, "-m", "overlayd", "config", "validate", str(deploy / "network-config.json")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    errors = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1
    assert "Traceback" not in errors, errors


def test_a_legacy_etcd_endpoints_variable_is_refused_naming_the_fix() -> None:
    """An environment file written for the earlier unit (``ETCD_ENDPOINTS=...``) must not let
    the agent start quietly on the default endpoint, without the options that unit passed."""
    parser = make_parser()
    with pytest.raises(OptionsError) as refused:
        resolve_options(parser.parse_args(["run"]), {"ETCD_ENDPOINTS": "http://192.0.2.2:2379"})
    assert "OVERLAYD_ETCD_ENDPOINTS" in str(refused.value) and "deploy/overlayd.env" in str(refused.value)
    renamed = {"ETCD_ENDPOINTS": "x", "OVERLAYD_ETCD_ENDPOINTS": "http://192.0.2.2:2379"}
    assert resolve_options(parser.parse_args(["run"]), renamed).etcd_endpoints == ("http://192.0.2.2:2379",)
    assert resolve_options(parser.parse_args(["run"]), {}).etcd_endpoints  # the default
    cli = parser.parse_args(normalize_argv(["run", "--etcd-endpoints=http://192.0.2.2:2379"]))
    assert resolve_options(cli, {"ETCD_ENDPOINTS": "x"}).etcd_endpoints == ("http://192.0.2.2:2379",)


def test_an_error_in_a_subcommand_points_at_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        make_parser().parse_args(["lab", "down", "ovlab"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error == "overlayd: unrecognized arguments: 'ovlab' (see `overlayd lab --help`)\n"
