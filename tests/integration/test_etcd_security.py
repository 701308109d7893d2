"""etcd over mutual TLS and with ``--auth``, against a real etcd with certificates made here.

A Registry with the right files and password works end to end (lease, list, watch); each wrong
one fails with an error naming the endpoint and the option to fix; the password appears in no
log line (ours, the libraries', gRPC's own stderr) and no error text.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from overlayd.etcd.peerwatch import PeerItem, PeerWatcher
from overlayd.etcd.registry import Registry, RegistryError
from overlayd.etcd.settings import EtcdSettings
from overlayd.lab.etcdserver import EtcdServer, EtcdTLS
from tests.integration.support import PeerView, host_attrs

PASSWORD = "pw-Zq83-never-shown"
TOKEN_TTL = 2  # seconds an unused etcd auth token lives

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def subnet(n: int) -> IPv4Network:
    return IPv4Network(f"198.18.{n}.0/24")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _new_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
    )  # fmt: skip
    return cert, key


def _new_leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    """A key and a certificate for it signed by ``ca``, with ``extensions`` (openssl syntax)."""
    cert, key, csr, ext = (directory / f"{name}.{suffix}" for suffix in ("pem", "key", "csr", "ext"))
    ext.write_text(extensions)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, etcd's server certificate (for IP 127.0.0.1), a client certificate, and a stranger CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca = _new_ca(directory, "ca")
    other_ca, _ = _new_ca(directory, "other-ca")
    server = _new_leaf(directory, "server", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client = _new_leaf(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    return {
        "ca": ca[0], "other_ca": other_ca, "server_cert": server[0], "server_key": server[1],
        "client_cert": client[0], "client_key": client[1],
    }  # fmt: skip


@pytest.fixture(scope="module")
def tls_etcd(pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """etcd serving clients only over TLS, demanding a client certificate signed by our CA."""
    tls = EtcdTLS(
        cert=pki["server_cert"], key=pki["server_key"], trusted_ca=pki["ca"],
        client_cert=pki["client_cert"], client_key=pki["client_key"],
    )  # fmt: skip
    with EtcdServer(tmp_path_factory.mktemp("tls-etcd"), name="tls-etcd", tls=tls) as server:
        yield server


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """etcd with ``--auth`` on: only root, with PASSWORD, may read or write; idle tokens expire soon."""
    directory = tmp_path_factory.mktemp("auth-etcd")
    with EtcdServer(directory, name="auth-etcd", extra_args=(f"--auth-token-ttl={TOKEN_TTL}",)) as server:
        server.enable_auth(PASSWORD)
        yield server


@pytest.fixture(autouse=True)
def no_password_anywhere(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[None]:
    """Every log record at DEBUG (ours and the libraries') and gRPC's stderr is checked for PASSWORD."""
    caplog.set_level(logging.DEBUG)
    yield
    assert PASSWORD not in caplog.text
    out, err = capfd.readouterr()
    assert PASSWORD not in out and PASSWORD not in err


@pytest.fixture
def connect(prefix: str) -> Iterator[Callable[..., Registry]]:
    """Registries on the test's prefix (``EtcdSettings`` fields as keywords), closed at teardown."""
    registries: list[Registry] = []

    def make(server: EtcdServer, **fields: object) -> Registry:
        options = replace(EtcdSettings(endpoints=(server.endpoint,), prefix=prefix, timeout=3.0), **fields)
        registries.append(Registry(options))
        return registries[-1]

    yield make
    for registry in registries:
        registry.close()


def _client_files(pki: dict[str, Path], ca: str = "ca") -> dict[str, object]:
    return {"cafile": str(pki[ca]), "certfile": str(pki["client_cert"]), "keyfile": str(pki["client_key"])}


def _watch_sees_a_new_lease(registry: Registry) -> None:
    items: queue.Queue[PeerItem] = queue.Queue()
    watcher = PeerWatcher(registry, items, backoff_initial=0.05, backoff_max=0.5)
    watcher.start()
    try:
        view = PeerView(items)
        view.wait_for(lambda v: v.snapshots == 1)
        assert registry.create_lease(subnet(2), host_attrs(2), ttl=600) is not None
        view.wait_for(lambda v: "198.18.2.0-24" in v.leases)
        assert view.snapshots == 1 and not view.downs, "delivered by the watch, not by a re-list"
    finally:
        watcher.stop()


def test_mutual_tls_with_the_right_files_leases_lists_and_watches(tls_etcd, pki, connect):
    assert tls_etcd.endpoint.startswith("https://")
    registry = connect(tls_etcd, **_client_files(pki))

    assert registry.create_lease(subnet(1), host_attrs(1), ttl=600) is not None
    leases, _revision = registry.list_leases()
    assert [lease.key for lease in leases] == ["198.18.1.0-24"]
    _watch_sees_a_new_lease(registry)


def test_without_a_client_certificate_the_error_names_the_certificate_options(tls_etcd, pki, connect):
    registry = connect(tls_etcd, cafile=str(pki["ca"]))
    with pytest.raises(RegistryError) as error:
        registry.list_leases()
    assert f"etcd at {tls_etcd.endpoint} broke off the TLS session" in str(error.value)
    assert "check --etcd-certfile/--etcd-keyfile" in str(error.value)


def test_a_wrong_ca_fails_the_handshake_and_the_error_names_cafile(tls_etcd, pki, connect):
    registry = connect(tls_etcd, **_client_files(pki, ca="other_ca"))
    with pytest.raises(RegistryError) as error:
        registry.create_lease(subnet(1), host_attrs(1), ttl=600)
    assert re.search(
        rf"TLS handshake with {re.escape(tls_etcd.endpoint)} failed \(CERTIFICATE_VERIFY_FAILED.*\): "
        r"check --etcd-cafile", str(error.value)
    )


def test_auth_with_the_right_password_leases_lists_and_watches(auth_etcd, connect):
    registry = connect(auth_etcd, username="root", password=PASSWORD)

    assert registry.create_lease(subnet(1), host_attrs(1), ttl=600) is not None
    assert len(registry.list_leases()[0]) == 1
    _watch_sees_a_new_lease(registry)


def test_an_expired_auth_token_is_renewed(auth_etcd, connect):
    registry = connect(auth_etcd, username="root", password=PASSWORD)
    assert registry.get_config()[0] is None
    time.sleep(TOKEN_TTL + 1.5)  # etcd forgets the idle token

    assert registry.create_lease(subnet(1), host_attrs(1), ttl=600) is not None


def test_a_wrong_password_gives_a_clear_error_without_either_password(auth_etcd, connect):
    wrong = f"{PASSWORD}-wrong"
    registry = connect(auth_etcd, username="root", password=wrong)
    with pytest.raises(RegistryError) as error:
        registry.list_leases()
    text = str(error.value)
    assert (
        f"authentication failed for user root at {auth_etcd.endpoint}: check --etcd-username/--etcd-password"
        in text
    )
    assert wrong not in text and PASSWORD not in text


def test_no_credentials_against_auth_names_the_missing_options(auth_etcd, connect):
    registry = connect(auth_etcd)
    with pytest.raises(RegistryError, match=r"requires authentication .*--etcd-username/--etcd-password"):
        registry.get_config()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"username": "root"}, "--etcd-username and --etcd-password go together"),
        ({"password": PASSWORD}, "--etcd-username and --etcd-password go together"),
        ({"cafile": "/ca.pem", "certfile": "/c.pem"}, "--etcd-certfile and --etcd-keyfile go together"),
    ],
)
def test_half_given_credentials_are_refused_before_connecting(auth_etcd, connect, fields, named):
    with pytest.raises(RegistryError, match=named) as error:
        connect(auth_etcd, **fields)
    assert PASSWORD not in str(error.value)


def test_an_https_endpoint_on_a_plain_http_etcd_says_to_check_the_scheme(etcd_server, pki, connect):
    """gRPC says "Handshake read failed (Socket closed)": nothing about TLS unless we say it."""
    https = etcd_server.endpoint.replace("http://", "https://")
    registry = connect(etcd_server, endpoints=(https,), cafile=str(pki["ca"]))
    with pytest.raises(RegistryError) as error:
        registry.get_config()
    assert f"TLS handshake with {https} failed (" in str(error.value)
    assert "check that etcd really serves TLS there (use http:// for an etcd without --cert-file)" in str(
        error.value
    )
