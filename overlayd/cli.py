"""The ``overlayd`` command: ``run`` (the agent) and the operator commands around it.

``status``, ``config validate|get|set``, ``docker-opts``, ``docker-plugin``, ``lab``, ``install-cni``,
``cni`` and ``cleanup``.

``overlayd`` with flanneld-style options and no subcommand means ``run``, so a flanneld unit
file's ExecStart only needs the binary's name changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from overlayd.lab.hosts import DEFAULT_BACKEND
from overlayd.logsetup import configure_logging
from overlayd.option_sources import build_parser, normalize_argv
from overlayd.options import AgentOptions, OptionsError, resolve_options

if TYPE_CHECKING:
    from overlayd.lab.namespaces import Lab

# `lab up` refused because a lab of that name has processes running: nothing was changed.
LAB_RUNNING = 3
# `status`: the agent is unreachable or not ready (the rest of the report may still be useful).
STATUS_AGENT_DOWN = 3
COMMANDS = (
    "run", "status", "config", "docker-opts", "docker-plugin", "lab", "install-cni", "cni", "cleanup",
    "bench",
)  # fmt: skip
# The agent options that commands talking to etcd or reading this host's files accept.
ETCD_OPTIONS = (
    "etcd_endpoints", "etcd_prefix", "etcd_cafile", "etcd_certfile", "etcd_keyfile",
    "etcd_username", "etcd_password", "log_level", "log_format", "verbose",
)  # fmt: skip


def _options(args: argparse.Namespace, default_level: str = "info") -> AgentOptions | None:
    """Resolve options from command line, environment and file, and set up logging; None on error."""
    try:
        options = resolve_options(args, os.environ)
    except OptionsError as exc:
        print(f"overlayd: {exc}", file=sys.stderr)
        return None
    level = options.log_level if getattr(args, "log_level", None) or options.verbose else default_level
    configure_logging(level, options.log_format, options.verbose)
    return options


def _install_backends() -> None:
    """Hand the backends' lease codecs down to ``overlayd.subnet``, which decodes leases (for
    ``overlayd.etcd``) but cannot import a backend."""
    from overlayd.backend.select import install

    install()


def _cmd_run(args: argparse.Namespace) -> int:
    options = _options(args)
    if options is None:
        return 2
    from overlayd.agent.heap import frozen_imports

    with frozen_imports():
        _install_backends()
        from overlayd.agent.daemon import Agent  # heavy imports (etcd3, gRPC) only when running
    return Agent(options).run()


def _cmd_lab(args: argparse.Namespace) -> int:
    from overlayd.backend.select import CONFIG_PARSERS
    from overlayd.lab.hosts import lab_network_config
    from overlayd.lab.namespaces import DEFAULT_ROOT, Lab, LabError, lab_namespaces
    from overlayd.subnet.config import ConfigError, parse_network_config

    if os.geteuid() != 0:
        print("overlayd lab: needs root (it creates network namespaces); run it with sudo", file=sys.stderr)
        return 2
    configure_logging("warning")
    root = Path(args.root)
    lab = Lab.load(args.name, root)
    try:
        if args.action == "up":
            if args.containers < 0:
                print(f"overlayd lab up: --containers {args.containers}: use 0 or more", file=sys.stderr)
                return 2
            leftover = lab or Lab(name=args.name, root=str(root))
            if running := leftover.running_pids():
                pids = ", ".join(map(str, sorted(running)))
                print(
                    f"overlayd lab up: lab {args.name} is running (pids {pids}): start another "
                    f"beside it with --name, or remove it with `overlayd lab down --name {args.name}`",
                    file=sys.stderr,
                )
                return LAB_RUNNING
            if lab is not None or lab_namespaces(args.name):
                leftover.down()
                print(f"lab {args.name}: removed what an earlier run left behind (none of its processes ran)")
            ipv6 = args.ipv6 or args.ipv6_only
            network_config = args.network_config or lab_network_config(
                args.backend, ipv6=ipv6, ipv4=not args.ipv6_only
            )
            try:  # the agents would refuse it: say why now rather than time out waiting for them
                parse_network_config(network_config, where="lab network config", backends=CONFIG_PARSERS)
            except ConfigError as exc:
                print(f"overlayd lab up: {exc}", file=sys.stderr)
                return 2
            lab = Lab(name=args.name, root=str(root), ipv6=ipv6)
            lab.up(args.hosts, network_config=network_config)
            lab.wait_converged(timeout=args.timeout)
            lab.add_containers(args.containers)
            if args.docker:
                from overlayd.lab.dockerhosts import start_docker_hosts

                try:
                    start_docker_hosts(lab.hosts, lab.cni_conflist, per_host=1)
                finally:
                    lab.save()
            print(lab.status())
            return _print_ping_tables(lab) if args.ping else 0
        if lab is None:
            if args.action == "down":
                Lab(name=args.name, root=str(root or DEFAULT_ROOT)).down()  # a crashed lab's leftovers
                return 0
            print(f"no lab named {args.name} under {root}; start one with `overlayd lab up`")
            return 1
        if args.action == "down":
            lab.down()
            print(f"lab {args.name} removed")
        elif args.action == "status":
            print(lab.status())
        elif args.action == "ping":
            return _print_ping_tables(lab)
        return 0
    except LabError as exc:
        print(f"overlayd lab {args.action}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"overlayd lab {args.action}: interrupted; `overlayd lab down --name {args.name}` removes what "
              "was built", file=sys.stderr)  # fmt: skip
        return 130


def _print_ping_tables(lab: Lab) -> int:
    """The hosts' and the containers' all-pairs ping tables; exit status 1 if any pair failed."""
    hosts, hosts_ok = lab.ping_table()
    print("\nping between the hosts' overlay addresses (3 probes each):\n" + hosts)
    containers, containers_ok = lab.container_ping_table()
    if containers:
        print("\nping between containers, same host and across hosts (3 probes each):\n" + containers)
    return 0 if hosts_ok and containers_ok else 1


def _read_input(name: str) -> str | None:
    """A file's text, or stdin's for ``-``; None (reported) when unreadable."""
    try:
        return sys.stdin.read() if name == "-" else Path(name).read_text()
    except OSError as exc:
        print(f"overlayd: cannot read {name}: {exc.strerror}", file=sys.stderr)
        return None


def _cmd_status(args: argparse.Namespace) -> int:
    from overlayd.ops import status

    options = _options(args, default_level="warning")
    if options is None:
        return 2
    address = None
    if options.metrics_address is not None:
        host, port = options.metrics_address
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    result = status.gather(options, address, args.cluster)
    if args.json:
        print(json.dumps(status.to_json(result), indent=2))
    else:
        print(status.render_text(result, time.time()))
    if result.nothing_read:
        print("overlayd status: nothing could be read (no subnet.env, no device, no agent, no etcd); "
              "see the reasons above", file=sys.stderr)  # fmt: skip
        return 1
    if problem := result.agent_down:
        print(f"overlayd status: {problem}", file=sys.stderr)
        return STATUS_AGENT_DOWN
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from overlayd.ops import netconfig as netconfig_cmd

    options = _options(args, default_level="warning")
    if options is None:
        return 2
    if args.action in ("validate", "check"):
        text = _read_input(args.file)
        where = netconfig_cmd.config_where(options.etcd_prefix)
        return 1 if text is None else netconfig_cmd.validate(text, where)
    text = _read_input(args.file) if args.action == "set" else ""
    if text is None:
        return 1
    from overlayd.etcd.registry import Registry, RegistryError

    registry = Registry(options.etcd_settings())
    try:
        if args.action == "get":
            return netconfig_cmd.get(registry, options.etcd_prefix)
        return netconfig_cmd.set_config(registry, options.etcd_prefix, text, args.dry_run, force=args.force)
    except RegistryError as exc:
        print(f"overlayd config {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        registry.close()


def _cmd_docker_opts(args: argparse.Namespace) -> int:
    from overlayd.base.atomicfile import write_atomic
    from overlayd.ops.dockeropts import DockerOpts, DockerOptsError, ipv6_only_notice, render_docker_opts
    from overlayd.subnet.subnetenv import parse_keys

    text = _read_input(args.flannel_env)
    if text is None:
        return 1
    choice = DockerOpts(
        combined_key=args.combined_key,
        individual=args.individual or not args.combined,
        combined=args.combined or not args.individual,
        ip_masq=not args.no_ip_masq,
    )
    subnet_env = parse_keys(text)
    try:
        existing = os.environ.get(args.combined_key, "")  # prepended, as mk-docker-opts.sh does
        rendered = render_docker_opts(subnet_env, choice, args.flannel_env, existing)
    except DockerOptsError as exc:
        print(f"overlayd docker-opts: {exc}", file=sys.stderr)
        return 1
    if notice := ipv6_only_notice(subnet_env, args.flannel_env):
        print(f"overlayd docker-opts: {notice}", file=sys.stderr)
    write_atomic(Path(args.docker_env), rendered)
    return 0


def _cmd_install_cni(args: argparse.Namespace) -> int:
    from overlayd.ops.install_cni import install_cni

    path = install_cni(Path(args.cni_bin_dir))
    print(f"installed {path}")
    return 0


def _cmd_cleanup(args: argparse.Namespace) -> int:
    """Remove what only overlayd uses, so flanneld can take the node over (or rolled back to).

    The agent leaves its nftables table and iptables forward chain on SIGTERM, so that a restart
    drops no traffic; with
    flanneld in its place nobody would keep the table's VXLAN allowlist up to date, and peers
    joining later would be dropped. The device, its entries, subnet.env and the lease are
    flanneld's too, and stay for it to adopt; but the udp backend's forwarder is stopped: it holds
    flannel0, which flanneld's own forwarder must create.
    """
    from overlayd.backend.udp.config import DEVICE_NAME
    from overlayd.backend.udp.control import ForwarderKeeper
    from overlayd.netfilter.firewall import Firewall, FirewallError
    from overlayd.netfilter.names import names_for_prefix
    from overlayd.option_sources import read_env

    configure_logging("warning")
    from_env = read_env("etcd_prefix", os.environ)
    prefix = args.etcd_prefix or (from_env[1] if from_env else AgentOptions.etcd_prefix)
    names = names_for_prefix(prefix)
    try:
        Firewall(names).remove()
    except FirewallError as exc:
        print(f"overlayd cleanup: {exc}", file=sys.stderr)
        return 1
    if ForwarderKeeper().stop(DEVICE_NAME):
        print(f"stopped the udp forwarder, and with it {DEVICE_NAME}: flanneld makes its own")
    print(
        f"removed nftables table ip {names.table} and iptables chain {names.forward_chain} of the "
        f"network under {prefix}, and its table ip6 {names.table} of a dual-stack network (if there "
        "were any); flannel.<VNI> (and flannel-v6.<VNI>), its entries, "
        "subnet.env and the lease are kept for flanneld to adopt. Run this with the agent "
        "stopped: a running agent writes the table again."
    )
    return 0


def _cmd_cni(args: argparse.Namespace) -> int:
    from overlayd.ops.cni_tool import run_cni_command

    return run_cni_command(args.cni_args)


def _cmd_docker_plugin(plugin_args: list[str]) -> int:
    from overlayd.dockerplugin.server import run_docker_plugin

    return run_docker_plugin(plugin_args)


def _cmd_bench(bench_args: list[str]) -> int:
    from overlayd.bench.run import main as bench_main

    return bench_main(bench_args)


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line naming the bad argument (exit 2), as journald shows them best."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # flanneld takes no abbreviations; neither do we
        super().__init__(*args, **kwargs)
        self._argv: list[str] = []

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            # A password split into words by the shell or systemd leaves the rest as stray words.
            secret = any("password" in arg.lower() for arg in self._argv)
            words = message.removeprefix(prefix).split(" ")
            message = prefix + _unknown_options(words, self._known(), show_words=not secret)
        self.exit(2, f"{self.prog}: {message} (see `{self._help_command()}`)\n")

    def _help_command(self) -> str:
        """``overlayd lab --help`` for an error in ``overlayd lab ...``: that help lists its options."""
        command = self._argv[0] if self._argv else ""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return f"{action.choices[command].prog} --help"
        return f"{self.prog} --help"

    def _known(self) -> list[str]:
        """Every option string of this parser and its subcommands, for "did you mean"."""
        known = list(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    known += sub._option_string_actions
        return known


def _unknown_options(tokens: list[str], known: list[str], show_words: bool) -> str:
    """Name unknown options without their values (a mistyped ``--etcd-password=...`` must not
    print the password) and suggest the closest known option. A stray word is shown (``lab down
    ovlab`` must say which word was not understood) when ``show_words`` and no option came
    before it, whose value it may be."""
    import difflib

    shown = []
    may_be_a_value = not show_words
    for token in tokens:
        if not token.startswith("-"):
            shown.append("<value>" if may_be_a_value else repr(token))
            continue
        may_be_a_value = True
        name, has_value, _ = token.partition("=")
        hint = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        suggestion = f" (did you mean {hint[0]}?)" if hint else ""
        shown.append(name + ("=<value>" if has_value else "") + suggestion)
    return " ".join(shown)


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="overlayd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = build_parser(sub.add_parser("run", help="run the per-host agent (flanneld's options)"))
    run.set_defaults(func=_cmd_run)

    lab = sub.add_parser("lab", help="a local multi-host cluster in network namespaces")
    lab.add_argument("action", choices=("up", "down", "status", "ping"))
    lab.add_argument("--name", default=os.environ.get("OVERLAYD_LAB", "ovlab"),
                     help="lab name, the prefix of every namespace (default ovlab); `up` leaves a running "
                          "lab of that name alone and exits 3")
    lab.add_argument("--hosts", type=int, default=3, help="number of hosts for `up` (default 3)")
    lab.add_argument("--root", default="/run/overlayd-lab", help="directory for lab state and logs")
    lab.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for convergence")
    lab.add_argument(
        "--containers", type=int, default=2,
        help="containers attached per host by the CNI plugin, for `up` (default 2)",
    )  # fmt: skip
    lab.add_argument("--ping", action="store_true", help="after `up`, print all-pairs ping tables")
    lab.add_argument("--docker", action="store_true",
                     help="`up`: also a dockerd and `overlayd docker-plugin` per host, with one container "
                          "each on the plugin's network `overlayd` (in the ping table)")
    lab.add_argument("--backend", default=DEFAULT_BACKEND, metavar="TYPE",
                     help="`up`: the network config's Backend.Type, with its defaults (default %(default)s)")
    lab.add_argument("--ipv6", action="store_true",
                     help="`up`: IPv6 on the underlay (2001:db8::/64) and a dual-stack network "
                          "(IPv6Network 2001:db8:1000::/48)")
    lab.add_argument("--ipv6-only", action="store_true",
                     help="`up`: like --ipv6, with an IPv6-only network (EnableIPv4 false): hosts and "
                          "containers reach each other over IPv6 alone")
    lab.add_argument("--network-config", metavar="JSON",
                     help="`up`: the whole network config to put in etcd (overrides --backend)")
    lab.set_defaults(func=_cmd_lab)

    status = sub.add_parser("status", help="this host's lease, device, peers and repairs (--cluster: all)")
    build_parser(status, (*ETCD_OPTIONS, "subnet_file", "metrics_address"))
    status.add_argument(
        "--cluster", action="store_true", help="also every lease in etcd and which node cannot reach which"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_cmd_status)

    config = sub.add_parser("config", help="validate, get or set the network config in etcd")
    config.add_argument("action", choices=("validate", "get", "set", "check"),
                        help="validate FILE offline (check: the same); get; set FILE")
    config.add_argument("file", nargs="?", default="-", help="JSON file for validate/set ('-': stdin)")
    config.add_argument("--dry-run", action="store_true", help="set: validate and show the diff only")
    config.add_argument("--force", action="store_true",
                        help="set: write a config that does not hand out live leases (renumbers their "
                        "nodes when their agents restart)")  # fmt: skip
    build_parser(config, ETCD_OPTIONS)
    config.set_defaults(func=_cmd_config)

    docker = sub.add_parser("docker-opts", help="Docker daemon options from subnet.env (mk-docker-opts.sh)")
    docker.add_argument("-f", dest="flannel_env", default="/run/flannel/subnet.env",
                        help="subnet.env to read (default /run/flannel/subnet.env)")
    docker.add_argument("-d", dest="docker_env", default="/run/flannel/docker",
                        help="env file to write, atomically (default /run/flannel/docker)")
    docker.add_argument("-k", dest="combined_key", default="DOCKER_OPTS",
                        help="name of the combined variable (default DOCKER_OPTS)")
    docker.add_argument("-c", dest="combined", action="store_true", help="write only the combined variable")
    docker.add_argument("-i", dest="individual", action="store_true",
                        help="write only DOCKER_OPT_BIP, DOCKER_OPT_IPMASQ, DOCKER_OPT_MTU")
    docker.add_argument("-m", dest="no_ip_masq", action="store_true", help="leave --ip-masq out")
    docker.set_defaults(func=_cmd_docker_opts)

    install = sub.add_parser("install-cni", help="install the CNI plugin as `flannel`")
    install.add_argument("--cni-bin-dir", default="/opt/cni/bin",
                         help="where to install it (default /opt/cni/bin)")
    install.set_defaults(func=_cmd_install_cni)

    cni = sub.add_parser("cni", help="run a conflist against a netns: add|del|check NETNS")
    cni.add_argument("cni_args", nargs=argparse.REMAINDER, help="see `overlayd cni add --help`",
                     metavar="{add,del,check} NETNS [--conflist FILE] [--ifname IF]")
    cni.set_defaults(func=_cmd_cni)

    cleanup = sub.add_parser(
        "cleanup", help="remove overlayd's nftables table and iptables forward chain (before flanneld starts)"
    )
    cleanup.add_argument("--etcd-prefix", "-etcd-prefix", dest="etcd_prefix", default=None,
                         help="the network whose table and chain to remove (default: FLANNELD_ETCD_PREFIX "
                         "or OVERLAYD_ETCD_PREFIX, else /coreos.com/network)")
    cleanup.set_defaults(func=_cmd_cleanup)

    plugin = sub.add_parser("docker-plugin", help="serve Docker's network and IPAM plugin API on this host")
    plugin.add_argument("plugin_args", nargs=argparse.REMAINDER, help="see `overlayd docker-plugin --help`")

    bench = sub.add_parser("bench", help="measure the agent, the CNI plugin and the data path in a lab")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="see `overlayd bench --help`")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]  # flanneld's command line: options only
    if argv[0] != "run":  # the agent's start installs them among its own imports
        _install_backends()
    if argv[0] == "bench":  # options of its own, which argparse.REMAINDER would not take first
        return _cmd_bench(argv[1:])
    if argv[0] == "docker-plugin":
        return _cmd_docker_plugin(argv[1:])
    args = make_parser().parse_args(normalize_argv(argv) if argv[0] == "run" else argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # another pipe or socket: a real error, with its traceback
        # The reader went away (`overlayd config get | head`): no traceback for that. Python
        # flushes stdout again at exit, so point it somewhere that accepts the rest.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll reports an error on it)."""
    import select

    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))

