"""Inconsistent etcd TLS and auth options stop `overlayd run` with one line that never quotes the password."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from overlayd.cli import main, make_parser
from overlayd.option_sources import normalize_argv
from overlayd.options import AgentOptions, OptionsError, resolve_options

PASSWORD = "pw-Kd71-never-shown"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([f"--etcd-password={PASSWORD}"], "--etcd-username and --etcd-password go together"),
        (
            ["--etcd-cafile={ca}", "--etcd-endpoints=http://192.0.2.2:2379,https://192.0.2.3:2379"],
            "etcd endpoint http://192.0.2.2:2379 is plain http: use https:// endpoints",
        ),
        (
            ["--etcd-cafile={ca}", "--etcd-certfile={ca}", "--etcd-endpoints=https://192.0.2.2:2379"],
            "--etcd-certfile and --etcd-keyfile go together",
        ),
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


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two self-signed certificates with their keys, one key encrypted, one certificate as DER."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    directory = tmp_path_factory.mktemp("pem")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    for name in ("ca", "other"):
        openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.pem"),
            "-days", "2", "-subj", f"/CN={name}",
        )  # fmt: skip
    openssl("pkey", "-in", str(directory / "ca.key"), "-aes256", "-passout", "pass:secret",
            "-out", str(directory / "encrypted.key"))  # fmt: skip
    openssl("x509", "-in", str(directory / "ca.pem"), "-outform", "DER", "-out", str(directory / "ca.der"))
    return {path.name.replace(".", "_"): path for path in directory.iterdir()}


def _resolve(*argv: str) -> AgentOptions:
    return resolve_options(make_parser().parse_args(normalize_argv(["run", *argv])), {})


@pytest.mark.parametrize(
    ("files", "named"),
    [
        (("ca_key",), "option --etcd-cafile: {ca_key} holds no PEM certificate; give the CA certificate"),
        (("ca_der",), "option --etcd-cafile: {ca_der} holds no PEM certificate"),
        (("ca_pem", "ca_key", "ca_key"), "option --etcd-certfile: {ca_key} holds no PEM certificate"),
        (
            ("ca_pem", "ca_pem", "other_key"),
            "option --etcd-keyfile: {other_key} is not the key of the certificate in --etcd-certfile "
            "{ca_pem}; give the key that certificate was issued for",
        ),
        (
            ("ca_pem", "ca_pem", "encrypted_key"),
            "option --etcd-keyfile: {encrypted_key} holds no unencrypted PEM private key",
        ),
        (
            ("ca_pem", "ca_pem", "ca_pem"),
            "option --etcd-keyfile: {ca_pem} holds no unencrypted PEM private key; give the key of",
        ),
    ],
)
def test_a_tls_file_of_the_wrong_kind_is_refused_naming_the_option(
    pem_files: dict[str, Path], files: tuple[str, ...], named: str
) -> None:
    """The CA and the key swapped, a DER certificate, a key of another certificate: each readable,
    each refused at start with the option and the file, not by gRPC at every connection attempt."""
    options = ("--etcd-cafile", "--etcd-certfile", "--etcd-keyfile")
    given = [f"{option}={pem_files[name]}" for option, name in zip(options, files, strict=False)]

    with pytest.raises(OptionsError) as refused:
        _resolve("--etcd-endpoints=https://192.0.2.2:2379", *given)

    assert named.format_map(pem_files) in str(refused.value)


def test_matching_tls_files_are_accepted(pem_files: dict[str, Path]) -> None:
    options = _resolve(
        "--etcd-endpoints=192.0.2.2:2379", f"--etcd-cafile={pem_files['other_pem']}",
        f"--etcd-certfile={pem_files['ca_pem']}", f"--etcd-keyfile={pem_files['ca_key']}",
    )  # fmt: skip
    assert options.etcd_endpoints == ("https://192.0.2.2:2379",)


def test_tls_files_with_plain_http_endpoints_are_unused_and_said_as_in_flanneld(tmp_path: Path) -> None:
    """flanneld's etcd client uses no TLS over http: its unit with leftover TLS files must start."""
    ca = tmp_path / "ca.pem"
    ca.write_text("never read over http\n")
    options = _resolve(f"--etcd-cafile={ca}", "--etcd-endpoints=http://192.0.2.2:2379")
    assert options.etcd_cafile is None
    [note] = options.ignored
    assert note.startswith("--etcd-cafile: the etcd endpoints are plain http, so no TLS is used")


def test_https_without_a_ca_file_checks_etcd_against_the_system_cas(monkeypatch: pytest.MonkeyPatch) -> None:
    """As flanneld's etcd client does; with no system bundle either, it is refused naming the option."""
    import ssl

    options = _resolve("--etcd-endpoints=https://192.0.2.2:2379")
    assert options.etcd_cafile == ssl.get_default_verify_paths().cafile is not None
    bare = ssl.get_default_verify_paths()._replace(cafile=None)
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: bare)
    with pytest.raises(OptionsError, match="is https but --etcd-cafile is not given and this host has no"):
        _resolve("--etcd-endpoints=https://192.0.2.2:2379")
