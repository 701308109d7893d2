"""Agent options under flanneld's names, from the command line, the environment and a YAML file.

An existing flanneld unit file must keep working, so every flanneld option is accepted with one
dash or two, and ``FLANNELD_<NAME>`` variables are read as well as ``OVERLAYD_<NAME>``. Precedence:
command line, then environment (OVERLAYD_ before FLANNELD_), then the YAML file, then the default.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import TYPE_CHECKING

from overlayd.etcd.settings import EtcdSettings, etcd_security_problem

if TYPE_CHECKING:
    from overlayd.backend.iface import InterfaceChoice


class OptionsError(ValueError):
    """A bad option value; the message names the option, where it came from, and the fix."""


@dataclass(frozen=True)
class AgentOptions:
    etcd_endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    etcd_prefix: str = "/coreos.com/network"
    etcd_cafile: str | None = None
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    etcd_username: str | None = None
    etcd_password: str | None = None
    iface: tuple[str, ...] = ()
    iface_regex: tuple[str, ...] = ()
    iface_can_reach: IPv4Address | None = None
    public_ip: IPv4Address | None = None
    subnet_file: Path = Path("/run/flannel/subnet.env")
    subnet_lease_renew_margin: int = 60  # minutes, as flanneld
    subnet_lease_ttl: int = 86400  # seconds
    ip_masq: bool = False
    iptables_forward_rules: bool = True
    vxlan_ingress_allowlist: bool = True  # accept VXLAN only from peers' PublicIPs
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0  # 0: no HTTP server, as flanneld
    metrics_address: tuple[str, int] | None = ("127.0.0.1", 9464)  # None: off
    state_dir: Path = Path("/var/lib/overlayd")
    reconcile_interval: float = 10.0  # seconds between full dump-and-diff passes
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


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "t", "true", "yes", "on"):
        return True
    if value in ("0", "f", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not true or false")


def _parse_endpoints(raw: str) -> tuple[str, ...]:
    endpoints = tuple(e.strip() for e in raw.split(",") if e.strip())
    for number, endpoint in enumerate(endpoints, 1):
        if "@" in endpoint:  # not echoed: it may hold a password
            raise ValueError(
                f"endpoint {number} carries user:password@; "
                "give them with --etcd-username and --etcd-password instead"
            )
        if not re.match(r"^(https?://)?[^/]+(:\d+)?/?$", endpoint):
            raise ValueError(f"{endpoint!r} is not a URL such as http://192.0.2.1:2379")
    if not endpoints:
        raise ValueError("no endpoint given")
    return endpoints


def _tls_files_problem(cafile: str | None, certfile: str | None, keyfile: str | None) -> str | None:
    """Why an etcd TLS file does not hold what its option needs, or None.

    A readable file of the wrong kind (the CA and the key swapped, a DER certificate) passes
    ``_readable_file``; gRPC would then fail every connection attempt with four lines of its own on
    stderr and an error that never names the option.
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


def _readable_file(raw: str) -> str:
    """A TLS file checked at start-up, so a typo fails now rather than at the first etcd call."""
    try:
        with open(raw, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {raw!r} ({exc.strerror}); give a readable PEM file") from None
    return raw


def _renew_margin(raw: str) -> int:
    minutes = int(raw)
    if not 1 <= minutes <= 1439:
        raise ValueError(f"{minutes} minutes is outside 1..1439")
    return minutes


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"{value} is not positive")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a port number (0..65535)")
    return value


def _optional_ipv4(raw: str) -> IPv4Address | None:
    """An IPv4 address; empty is unset, as flanneld reads ``--public-ip=`` (an unset variable)."""
    return IPv4Address(raw) if raw else None


def _healthz_ip(raw: str) -> str:
    ip_address(raw or "0.0.0.0")  # a host name would fail only at bind time, restarting the unit
    return raw


def _listen_address(raw: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[V6]:PORT`` for IPv6) to listen on; empty or ``off`` disables."""
    if raw.lower() in ("", "off"):
        return None
    host, _, port = raw.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ip_address(host)
        if not port.isdigit():
            raise ValueError(port)
        return host, _port(port)
    except ValueError:
        raise ValueError(f"{raw!r} is not IP:PORT such as 127.0.0.1:9464, or off") from None


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{value} is not positive")
    return value


def _log_level(raw: str) -> str:
    level = raw.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{raw!r} is not one of debug, info, warning, error")
    return level


def _log_format(raw: str) -> str:
    fmt = raw.lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"{raw!r} is not text or json")
    return fmt


def _verbosity(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 2:
        raise ValueError(f"{value} is outside 0..2 (-v or -vv)")
    return value


@dataclass(frozen=True)
class _Spec:
    """How one option is parsed from text; ``repeat`` options collect a list, ``count`` ones count -v.
    A ``repeat`` option with ``split`` also takes a comma-separated list from the environment."""

    convert: Callable[[str], object]
    help: str
    repeat: bool = False
    split: bool = False
    flag: bool = False
    count: bool = False
    short: str | None = None


_SPECS: dict[str, _Spec] = {
    "etcd_endpoints": _Spec(_parse_endpoints, "comma-separated etcd URLs"),
    "etcd_prefix": _Spec(str, "etcd prefix of the network config and leases"),
    "etcd_cafile": _Spec(_readable_file, "CA certificate to verify etcd's TLS certificate"),
    "etcd_certfile": _Spec(_readable_file, "client TLS certificate for etcd"),
    "etcd_keyfile": _Spec(_readable_file, "client TLS key for etcd"),
    "etcd_username": _Spec(str, "etcd user name"),
    "etcd_password": _Spec(str, "etcd password"),
    "iface": _Spec(str, "interface name or IP to use for the overlay (repeatable)", repeat=True, split=True),
    # Not split: a comma belongs to a regex ("{1,2}"), and flanneld reads the variable whole.
    "iface_regex": _Spec(str, "regex matching interface names or IPs (repeatable)", repeat=True),
    "iface_can_reach": _Spec(_optional_ipv4, "pick the interface that routes to this IPv4 address"),
    "public_ip": _Spec(_optional_ipv4, "IPv4 address peers send VXLAN traffic to"),
    "subnet_file": _Spec(Path, "where to write subnet.env"),
    "subnet_lease_renew_margin": _Spec(
        _renew_margin, "renew the lease this many minutes before expiry, but not before half its time is up"
    ),
    "subnet_lease_ttl": _Spec(_positive_int, "TTL in seconds of the etcd lease bound to our subnet key"),
    "ip_masq": _Spec(parse_bool, "masquerade traffic leaving the overlay", flag=True),
    "iptables_forward_rules": _Spec(parse_bool, "accept forwarded overlay traffic", flag=True),
    "vxlan_ingress_allowlist": _Spec(
        parse_bool, "drop VXLAN packets from addresses that hold no peer lease", flag=True
    ),
    "healthz_ip": _Spec(_healthz_ip, "IP address of the /healthz, /readyz and /metrics server"),
    "healthz_port": _Spec(_port, "port of the /healthz, /readyz and /metrics server (0: off)"),
    "metrics_address": _Spec(
        _listen_address, "IP:PORT serving /metrics, /healthz and /readyz (default 127.0.0.1:9464; off: none)"
    ),
    "state_dir": _Spec(Path, "directory for state the agent keeps across restarts; one agent per directory"),
    "reconcile_interval": _Spec(_positive_float, "seconds between full reconcile passes"),
    "log_level": _Spec(_log_level, "debug, info, warning or error"),
    "log_format": _Spec(_log_format, "text, or json: one object per line with ts, level, logger, msg"),
    "verbose": _Spec(
        _verbosity, "-v: debug logs from overlayd; -vv: also from libraries (etcd client, gRPC)",
        count=True, short="-v",
    ),
}


_ONLY_KUBE = "it only applies with --kube-subnet-mgr; overlayd takes subnets from etcd"
# flanneld options that have no effect here, accepted so that a flanneld unit file starts
# unchanged, and logged with the reason. --kube-subnet-mgr is one of them only when false.
FLANNELD_IGNORED: dict[str, str] = {
    "iptables-resync": "the nftables table is checked on every reconcile pass",
    "kube-subnet-mgr": "overlayd takes subnets from etcd",
    "kube-api-url": _ONLY_KUBE,
    "kubeconfig-file": _ONLY_KUBE,
    "kube-annotation-prefix": _ONLY_KUBE,
    "net-config-path": _ONLY_KUBE,
    "set-node-network-unavailable": _ONLY_KUBE,
    "use-multi-cluster-cidr": _ONLY_KUBE,
    "persistent-mac": "the VTEP MAC is always kept, in --state-dir",
    "public-ipv6": "overlayd serves IPv4 only",
    "vmodule": "a klog setting; use -v or --log-level",
    "log_backtrace_at": "a klog setting; use -v or --log-level",
}
_KLOG_LEVEL = re.compile(r"^--?v(?:=(\d+))?$")


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(
    parser: argparse.ArgumentParser, names: Collection[str] | None = None
) -> argparse.ArgumentParser:
    """Add the agent options ``names`` (default: all), without defaults.

    Unset options stay None so they fall through to the environment, the file, the default.
    """
    parser.add_argument("--config", dest="config_file", type=Path, help="YAML file of options")
    for name, spec in _SPECS.items():
        if names is not None and name not in names:
            continue
        kwargs: dict[str, object] = {"dest": name, "help": spec.help, "default": None}
        if spec.flag:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        if spec.repeat:
            kwargs["action"] = "append"
        if spec.count:
            kwargs["action"] = "count"
        flags = [spec.short] if spec.short else []
        parser.add_argument(*flags, _flag_name(name), **kwargs)
    if names is None:  # the agent's own parser: flanneld's remaining options too
        from overlayd import __version__

        parser.add_argument("--version", action="version", version=f"overlayd {__version__}")
        for flanneld_name in FLANNELD_IGNORED:
            parser.add_argument(
                f"--{flanneld_name}", dest=f"flanneld_{flanneld_name}", nargs="?", const="true",
                default=None, help=argparse.SUPPRESS,
            )  # fmt: skip
    return parser


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Accept flanneld's single-dash spelling (``-etcd-endpoints=...``) for every long option,
    and its klog level (``-v=2``, ``--v 2``): any level from 1 is ``-v``, 0 is none."""
    known = {_flag_name(name)[2:] for name in _SPECS} | {"config", "version", "help", *FLANNELD_IGNORED}
    result = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if klog := _KLOG_LEVEL.match(arg):
            level = klog.group(1)
            if level is None and args and args[0].isdigit():  # `-v 2`: the level comes next
                level = args.pop(0)
            if level is None or int(level) > 0:
                result.append("-v")
            continue
        name = arg[1:].split("=", 1)[0]
        if arg.startswith("-") and not arg.startswith("--") and name in known:
            arg = "-" + arg
        result.append(arg)
    return result


def _from_env(name: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    for prefix in ("OVERLAYD_", "FLANNELD_"):
        var = prefix + name.upper()
        if env.get(var, "") != "":
            return var, env[var]
    return None


def _convert(name: str, raw: object, source: str) -> object:
    spec = _SPECS[name]
    items = raw if isinstance(raw, list) else [raw]
    if spec.split and isinstance(raw, str) and source != "command line":
        items = [part for part in raw.split(",") if part.strip()]
    if spec.flag and isinstance(raw, bool):
        return raw
    try:
        values = [spec.convert(str(item).strip()) for item in items]
    except ValueError as exc:
        raise OptionsError(
            f"option {_flag_name(name)} from {source}: {exc}; {spec.help}"
        ) from None
    if spec.repeat:
        return tuple(values)
    if len(values) != 1:
        raise OptionsError(f"option {_flag_name(name)} from {source}: give one value, not a list")
    return values[0]


def _load_file(path: Path) -> dict[str, object]:
    import yaml  # only with --config: ~5 ms of every start otherwise (the agent's cold start)

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise OptionsError(f"config file {path}: {exc.strerror}; fix the path given to --config") from None
    except yaml.YAMLError as exc:
        # Only where and what: the YAML library quotes the offending line, which may hold a password.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise OptionsError(f"config file {path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OptionsError(f"config file {path}: must be a mapping of option names to values")
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_").lower()
        if name not in _SPECS:
            raise OptionsError(
                f"config file {path}: unknown option {key!r}; known options: "
                + ", ".join(n.replace("_", "-") for n in _SPECS)
            )
        values[name] = value
    return values


def _ignored_flanneld_options(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, ...]:
    """``--name=value: why`` for each flanneld-only option given, on the command line or as
    flanneld's ``FLANNELD_<NAME>`` variable; refuses --kube-subnet-mgr."""
    ignored = []
    for name, why in FLANNELD_IGNORED.items():
        value, source = getattr(args, f"flanneld_{name}", None), "command line"
        if value is None and (from_env := _from_env(name.replace("-", "_"), env)):
            value, source = from_env[1], f"environment variable {from_env[0]}"
        if value is None:
            continue
        if name == "kube-subnet-mgr":
            try:
                wanted = parse_bool(value)
            except ValueError as exc:
                raise OptionsError(f"option --kube-subnet-mgr from {source}: {exc}") from None
            if wanted:
                raise OptionsError(
                    f"option --kube-subnet-mgr from {source}: overlayd takes subnets from etcd only, not "
                    "from the Kubernetes API; remove it and give --etcd-endpoints"
                )
        ignored.append(f"--{name}={value}: {why}")
    return tuple(ignored)


def resolve_options(args: argparse.Namespace, env: Mapping[str, str]) -> AgentOptions:
    """Merge command line, environment, YAML file and defaults into AgentOptions."""
    config_file = getattr(args, "config_file", None)
    if config_file is None and env.get("OVERLAYD_CONFIG"):
        config_file = Path(env["OVERLAYD_CONFIG"])
    from_file = _load_file(config_file) if config_file else {}
    chosen: dict[str, object] = {}
    for name in _SPECS:
        cli_value = getattr(args, name, None)
        env_value = _from_env(name, env)
        if cli_value is not None:
            chosen[name] = _convert(name, cli_value, "command line")
        elif env_value is not None:
            chosen[name] = _convert(name, env_value[1], f"environment variable {env_value[0]}")
        elif name in from_file:
            chosen[name] = _convert(name, from_file[name], f"config file {config_file}")
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
    chosen["ignored"] = _ignored_flanneld_options(args, env)
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
    files = {_flag_name(name): getattr(options, name) for name in tls_options}
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
