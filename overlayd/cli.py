"""The ``overlayd`` command: ``run`` (the agent), ``lab``, ``config check``, ``install-cni``, ``cni``.

``overlayd`` with flanneld-style options and no subcommand means ``run``, so a flanneld unit
file's ExecStart only needs the binary's name changed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from overlayd.options import OptionsError, build_parser, normalize_argv, resolve_options

COMMANDS = ("run", "lab", "config", "install-cni", "cni")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        options = resolve_options(args, os.environ)
    except OptionsError as exc:
        print(f"overlayd: {exc}", file=sys.stderr)
        return 2
    _setup_logging(options.log_level)
    from overlayd.agent import Agent  # heavy imports (etcd3, pyroute2) only when running

    return Agent(options).run()


def _cmd_lab(args: argparse.Namespace) -> int:
    from overlayd.lab import DEFAULT_ROOT, Lab, LabError

    _setup_logging("warning")
    root = Path(args.root)
    lab = Lab.load(args.name, root)
    try:
        if args.action == "up":
            if lab is not None:
                print(f"lab {args.name} already exists; run `overlayd lab down --name {args.name}` first")
                return 1
            lab = Lab(name=args.name, root=str(root))
            lab.up(args.hosts)
            lab.wait_converged(timeout=args.timeout)
            print(lab.status())
            if args.ping:
                table, ok = lab.ping_table()
                print("\nping between flannel.1 addresses (3 probes each):\n" + table)
                return 0 if ok else 1
            return 0
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
            table, ok = lab.ping_table()
            print(table)
            return 0 if ok else 1
        return 0
    except LabError as exc:
        print(f"overlayd lab {args.action}: {exc}", file=sys.stderr)
        return 1


def _cmd_config(args: argparse.Namespace) -> int:
    from overlayd.config import ConfigError, parse_network_config

    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    try:
        config = parse_network_config(text, where=f"network config in {args.file}")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"Network {config.network}, SubnetLen {config.subnet_len}, "
        f"SubnetMin {config.subnet_min}, SubnetMax {config.subnet_max}, "
        f"Backend {config.backend.type} VNI {config.backend.vni} Port {config.backend.port}"
    )
    return 0


def _cmd_install_cni(args: argparse.Namespace) -> int:
    from overlayd.install_cni import install_cni

    path = install_cni(Path(args.cni_bin_dir))
    print(f"installed {path}")
    return 0


def _cmd_cni(args: argparse.Namespace) -> int:
    from overlayd.cni_tool import run_cni_command

    return run_cni_command(args.cni_args)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="overlayd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = build_parser(sub.add_parser("run", help="run the per-host agent (flanneld's options)"))
    run.set_defaults(func=_cmd_run)

    lab = sub.add_parser("lab", help="a local multi-host cluster in network namespaces")
    lab.add_argument("action", choices=("up", "down", "status", "ping"))
    lab.add_argument("--name", default=os.environ.get("OVERLAYD_LAB", "ovlab"),
                     help="lab name, the prefix of every namespace (default ovlab)")
    lab.add_argument("--hosts", type=int, default=3, help="number of hosts for `up` (default 3)")
    lab.add_argument("--root", default="/run/overlayd-lab", help="directory for lab state and logs")
    lab.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for convergence")
    lab.add_argument("--ping", action="store_true", help="after `up`, print an all-pairs ping table")
    lab.set_defaults(func=_cmd_lab)

    config = sub.add_parser("config", help="check a network config JSON file ('-' for stdin)")
    config.add_argument("check", choices=("check",))
    config.add_argument("file")
    config.set_defaults(func=_cmd_config)

    install = sub.add_parser("install-cni", help="install the CNI plugin as `flannel`")
    install.add_argument("--cni-bin-dir", default="/opt/cni/bin")
    install.set_defaults(func=_cmd_install_cni)

    cni = sub.add_parser("cni", help="run a conflist against a netns: add|del|check NETNS")
    cni.add_argument("cni_args", nargs=argparse.REMAINDER)
    cni.set_defaults(func=_cmd_cni)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]  # flanneld's command line: options only
    args = make_parser().parse_args(normalize_argv(argv) if argv[0] == "run" else argv)
    return int(args.func(args) or 0)

