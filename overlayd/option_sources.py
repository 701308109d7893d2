"""Where option values come from: the command line (also in flanneld's spellings), environment, YAML file."""

from __future__ import annotations

import argparse
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from overlayd.option_specs import FLANNELD_IGNORED, SPECS, OptionsError, flag_name, parse_bool

_KLOG_LEVEL = re.compile(r"^--?v(?:=(\d+))?$")
# flanneld's klog verbosity as a variable (its flag is -v): any level from 1 is our -v.
KLOG_LEVEL_VARIABLE = "FLANNELD_V"
# Variables flanneld reads that name no option of either program's table.
_FLANNELD_OTHER_VARIABLES = {"FLANNELD_VERSION": "flanneld checks -version before it reads variables"}


def build_parser(
    parser: argparse.ArgumentParser, names: Collection[str] | None = None
) -> argparse.ArgumentParser:
    """Add the agent options ``names`` (default: all), without defaults.

    Unset options stay None so they fall through to the environment, the file, the default.
    """
    parser.add_argument("--config", dest="config_file", type=Path, help="YAML file of options")
    for name, spec in SPECS.items():
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
        parser.add_argument(*flags, flag_name(name), **kwargs)
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
    known = {flag_name(name)[2:] for name in SPECS} | {"config", "version", "help", *FLANNELD_IGNORED}
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


def read_env(name: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """Option ``name``'s variable and value: ``OVERLAYD_<NAME>``, else ``FLANNELD_<NAME>``; None if unset."""
    for prefix in ("OVERLAYD_", "FLANNELD_"):
        var = prefix + name.upper()
        if env.get(var, "") != "":
            return var, env[var]
    if name == "verbose" and (level := env.get(KLOG_LEVEL_VARIABLE, "").strip()):
        if level.isdigit():
            level = "1" if int(level) > 0 else "0"
        return KLOG_LEVEL_VARIABLE, level
    return None


def convert(name: str, raw: object, source: str) -> object:
    """Option ``name``'s value parsed from ``raw``; OptionsError names the option, ``source`` and the fix."""
    spec = SPECS[name]
    items = raw if isinstance(raw, list) else [raw]
    if spec.split and isinstance(raw, str) and source != "command line":
        items = [part for part in raw.split(",") if part.strip()]
    if spec.flag and isinstance(raw, bool):
        return raw
    try:
        values = [spec.convert(str(item).strip()) for item in items]
    except ValueError as exc:
        raise OptionsError(
            f"option {flag_name(name)} from {source}: {exc}; {spec.help}"
        ) from None
    if spec.repeat:
        return tuple(values)
    if len(values) != 1:
        raise OptionsError(f"option {flag_name(name)} from {source}: give one value, not a list")
    return values[0]


def load_file(path: Path) -> dict[str, object]:
    """The options in YAML file ``path`` (``--config``), by option name; OptionsError if it is not one."""
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
        if name not in SPECS:
            raise OptionsError(
                f"config file {path}: unknown option {key!r}; known options: "
                + ", ".join(n.replace("_", "-") for n in SPECS)
            )
        values[name] = value
    return values


def ignored_flanneld_options(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, ...]:
    """``--name=value: why`` for each flanneld-only option given, on the command line or as
    flanneld's ``FLANNELD_<NAME>`` variable; refuses --kube-subnet-mgr."""
    ignored = []
    for name, why in FLANNELD_IGNORED.items():
        value, source = getattr(args, f"flanneld_{name}", None), "command line"
        if value is None and (from_env := read_env(name.replace("-", "_"), env)):
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
    return tuple(ignored) + unknown_flanneld_variables(env)


def unknown_flanneld_variables(env: Mapping[str, str]) -> tuple[str, ...]:
    """``NAME: why`` for each ``FLANNELD_*`` variable set that no option reads (a typo, or one
    flanneld itself ignores), so that a unit's silently dropped setting shows in the log."""
    read = {"FLANNELD_" + name.upper() for name in SPECS}
    read |= {"FLANNELD_" + name.upper().replace("-", "_") for name in FLANNELD_IGNORED}
    read.add(KLOG_LEVEL_VARIABLE)
    notes = []
    for var in sorted(name for name in env if name.startswith("FLANNELD_") and name not in read):
        why = _FLANNELD_OTHER_VARIABLES.get(var, "no flanneld or overlayd option reads this variable")
        notes.append(f"{var}: {why}")
    return tuple(notes)
