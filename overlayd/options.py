"""Agent options under flanneld's names, from the command line, the environment and a YAML file.

An existing flanneld unit file must keep working, so every flanneld option is accepted with one
dash or two, and ``FLANNELD_<NAME>`` variables are read as well as ``OVERLAYD_<NAME>``. Precedence:
command line, then environment (OVERLAYD_ before FLANNELD_), then the YAML file, then the default.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import TYPE_CHECKING

from overlayd.etcd.settings import EtcdSettings, etcd_security_problem
from overlayd.option_sources import convert, ignored_flanneld_options, load_file, read_env
from overlayd.option_specs import SPECS, OptionsError, flag_name

if TYPE_CHECKING:
    from overlayd.backend.iface import InterfaceChoice

# flanneld's default: etcd's legacy client port first, then the current one (fail-over to the second).
DEFAULT_ENDPOINTS = ("http://127.0.0.1:4001", "http://127.0.0.1:2379")


@dataclass(frozen=True)
class AgentOptions:
    etcd_endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    etcd_prefix: str = "/coreos.com/network"
    etcd_cafile: str | None = None
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    etcd_username: str | None = None
    etcd_password: str | None = None
    iface: tuple[str, ...] = ()
    iface_regex: tuple[str, ...] = ()
    iface_can_reach: IPv4Address | IPv6Address | None = None
    public_ip: IPv4Address | None = None
    public_ipv6: IPv6Address | None = None  # dual-stack: else the interface's global IPv6 address
    subnet_file: Path = Path("/run/flannel/subnet.env")
    subnet_lease_renew_margin: int = 60  # minutes, as flanneld
    subnet_lease_ttl: int = 86400  # seconds
    ip_masq: bool = False
    ip_masq_fully_random_disable: bool = False  # masquerade fully-random unless set, as flanneld v0.28
    ip_blackhole_route: bool = False
    iptables_forward_rules: bool = True
    vxlan_ingress_allowlist: bool = True  # accept VXLAN only from peers' PublicIPs
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0  # 0: no HTTP server, as flanneld
    metrics_address: tuple[str, int] | None = ("127.0.0.1", 9464)  # None: off
    state_dir: Path = Path("/var/lib/overlayd")
    reconcile_interval: float = 10.0  # seconds between full dump-and-diff passes
    probe_rate: float = 20.0  # data path probes a second, for all peers together (0: off)
    log_level: str = "info"
    log_format: str = "text"
    verbose: int = 0  # -v: debug from overlayd; -vv: debug from libraries too
    # flanneld options given that have no effect here, each with why (logged at start).
    ignored: tuple[str, ...] = ()

    def interface_choice(self) -> InterfaceChoice:
        """The ``--iface*`` and ``--public-ip`` part of these options, as interface selection takes it."""
        # Here, not at the top: rtnetlink's codec would slow every command's start, not only `run`.
        from overlayd.backend.iface import InterfaceChoice

        return InterfaceChoice(
            names=self.iface,
            patterns=self.iface_regex,
            can_reach=self.iface_can_reach,
            public_ip=self.public_ip,
            public_ipv6=self.public_ipv6,
        )

    def etcd_settings(self) -> EtcdSettings:
        """The ``--etcd-*`` part of these options, as the registry takes it."""
        return EtcdSettings(
            endpoints=self.etcd_endpoints,
            prefix=self.etcd_prefix,
            cafile=self.etcd_cafile,
            certfile=self.etcd_certfile,
            keyfile=self.etcd_keyfile,
            username=self.etcd_username,
            password=self.etcd_password,
        )


def _tls_files_problem(cafile: str | None, certfile: str | None, keyfile: str | None) -> str | None:
    """Why an etcd TLS file does not hold what its option needs, or None.

    A readable file of the wrong kind (the CA and the key swapped, a DER certificate) passes the
    option table's readability check; gRPC would then fail every connection attempt with four lines
    of its own on stderr and an error that never names the option.
    """
    if not (cafile or certfile):
        return None
    import ssl  # only with TLS options: most agents talk to etcd over plain http

    wanted = (
        ("--etcd-cafile", cafile, "the CA certificate that signed etcd's server certificate"),
        ("--etcd-certfile", certfile, "this host's client certificate"),
    )
    for option, path, what in wanted:
        if not path:
            continue
        store = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        with contextlib.suppress(ssl.SSLError):  # then the store below holds no certificate
            store.load_verify_locations(cafile=path)
        if not store.cert_store_stats()["x509"]:
            return (
                f"option {option}: {path} holds no PEM certificate; give {what} "
                "as PEM (-----BEGIN CERTIFICATE-----)"
            )
    if certfile and keyfile:
        try:
            # An empty password makes an encrypted key fail here instead of prompting on the
            # terminal; gRPC cannot use an encrypted key either.
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(certfile, keyfile, password=b"")
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                return (
                    f"option --etcd-keyfile: {keyfile} is not the key of the certificate in "
                    f"--etcd-certfile {certfile}; give the key that certificate was issued for"
                )
            return (
                f"option --etcd-keyfile: {keyfile} holds no unencrypted PEM private key; give the key of "
                f"--etcd-certfile {certfile} as PEM without a passphrase (-----BEGIN PRIVATE KEY-----)"
            )
    return None


def resolve_options(args: argparse.Namespace, env: Mapping[str, str]) -> AgentOptions:
    """Merge command line, environment, YAML file and defaults into AgentOptions."""
    config_file = getattr(args, "config_file", None)
    if config_file is None and env.get("OVERLAYD_CONFIG"):
        config_file = Path(env["OVERLAYD_CONFIG"])
    from_file = load_file(config_file) if config_file else {}
    chosen: dict[str, object] = {}
    for name in SPECS:
        cli_value = getattr(args, name, None)
        env_value = read_env(name, env)
        if cli_value is not None:
            chosen[name] = convert(name, cli_value, "command line")
        elif env_value is not None:
            chosen[name] = convert(name, env_value[1], f"environment variable {env_value[0]}")
        elif name in from_file:
            chosen[name] = convert(name, from_file[name], f"config file {config_file}")
    if "etcd_endpoints" not in chosen and env.get("ETCD_ENDPOINTS"):
        # The unit file of earlier releases passed --etcd-endpoints=${ETCD_ENDPOINTS}; the current
        # one passes nothing. Starting on the default endpoint instead would quietly use the
        # wrong etcd (and without that unit's --ip-masq, drop masquerading): refuse, and say why.
        raise OptionsError(
            f"ETCD_ENDPOINTS={env['ETCD_ENDPOINTS']} is set, but overlayd reads "
            "OVERLAYD_ETCD_ENDPOINTS (or FLANNELD_ETCD_ENDPOINTS): rename it in "
            "/etc/default/overlayd and set the options the old unit passed (OVERLAYD_IP_MASQ=true, "
            "OVERLAYD_HEALTHZ_PORT=9464), as in deploy/overlayd.env"
        )
    chosen["ignored"] = ignored_flanneld_options(args, env)
    options = AgentOptions(**chosen)  # type: ignore[arg-type]
    if any("://" not in endpoint for endpoint in options.etcd_endpoints):
        # As etcd's Go client reads host:port, which flanneld passes it: TLS when TLS files are given.
        scheme = "https://" if options.etcd_cafile or options.etcd_certfile else "http://"
        endpoints = tuple(e if "://" in e else scheme + e for e in options.etcd_endpoints)
        options = replace(options, etcd_endpoints=endpoints)
    options = _etcd_tls_as_flanneld(options)
    files = (options.etcd_cafile, options.etcd_certfile, options.etcd_keyfile)
    login = (options.etcd_username, options.etcd_password)
    if problem := etcd_security_problem(options.etcd_endpoints, *files, *login) or _tls_files_problem(*files):
        raise OptionsError(problem)
    return options


def _etcd_tls_as_flanneld(options: AgentOptions) -> AgentOptions:
    """The endpoints' scheme decides TLS, as in flanneld's etcd client, so its unit files start:
    over plain http the TLS files go unused (noted, not refused), and over https without
    --etcd-cafile etcd's certificate is checked against the system's CAs."""
    https = [endpoint for endpoint in options.etcd_endpoints if endpoint.lower().startswith("https://")]
    tls_options = ("etcd_cafile", "etcd_certfile", "etcd_keyfile")
    files = {flag_name(name): getattr(options, name) for name in tls_options}
    if not https and any(files.values()):
        given = ", ".join(option for option, path in files.items() if path)
        note = (
            f"{given}: the etcd endpoints are plain http, so no TLS is used (flanneld ignores them "
            "there too); give https:// endpoints for TLS"
        )
        return replace(
            options, etcd_cafile=None, etcd_certfile=None, etcd_keyfile=None, ignored=(*options.ignored, note)
        )
    if https and not options.etcd_cafile:
        import ssl  # only for this case: most agents talk to etcd over plain http

        if system_cas := ssl.get_default_verify_paths().cafile:
            return replace(options, etcd_cafile=system_cas)
    return options
