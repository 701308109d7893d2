"""``overlayd config validate|get|set``: the network config at ``<prefix>/config``, checked as the agent does.

``set`` refuses a config the agent would refuse, with the agent's own message, so a typo never
reaches etcd and stalls every node; it shows the diff first and ``--dry-run`` stops there. It also
refuses, unless ``--force``, a config that does not hand out live leases: their agents would keep
the config in force (``confchange``) until restarted, and a restart renumbers the node.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import sys
from typing import Any, TextIO

from overlayd.backend.select import CONFIG_PARSERS, backend_for, default_type_notice, ipv6_half_notice
from overlayd.subnet.confchange import describe, leases_outside, name_leases
from overlayd.subnet.config import ConfigError, NetworkConfig, parse_network_config


def config_where(prefix: str) -> str:
    """How the agent names the config in its messages (the same words here)."""
    return f"network config at {prefix.rstrip('/')}/config"


def defaulted_view(config: NetworkConfig) -> dict[str, Any]:
    """The config as the agent uses it, defaults filled in, in flannel's key spelling."""
    backend = backend_for(config.backend.type)
    try:
        section = backend.config_fields(config.backend)
    finally:
        backend.close()
    if config.ipv4 is None:  # IPv6-only: flannel's spelling, no IPv4 keys (their values are ignored)
        view: dict[str, Any] = {"EnableIPv4": False}
    else:
        view = {
            "Network": str(config.ipv4.network),
            "SubnetLen": config.ipv4.subnet_len,
            "SubnetMin": str(config.ipv4.subnet_min),
            "SubnetMax": str(config.ipv4.subnet_max),
        }
    if config.ipv6 is not None:
        view |= {
            "EnableIPv6": True,
            "IPv6Network": str(config.ipv6.network),
            "IPv6SubnetLen": config.ipv6.subnet_len,
            "IPv6SubnetMin": str(config.ipv6.subnet_min),
            "IPv6SubnetMax": str(config.ipv6.subnet_max),
        }
    return view | {"Backend": section}


def _normalized_lines(raw: bytes | str | None) -> list[str]:
    """Pretty JSON lines (keys sorted) so the diff shows changes, not formatting; raw text if not JSON."""
    if raw is None:
        return []
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=2, sort_keys=True)
    return [line + "\n" for line in text.splitlines()]


def config_diff(current: bytes | None, proposed: bytes | str, key: str) -> str:
    """A unified diff from the stored config to the proposed one; empty when they mean the same."""
    return "".join(
        difflib.unified_diff(
            _normalized_lines(current),
            _normalized_lines(proposed),
            fromfile=f"{key} (in etcd)" if current is not None else f"{key} (absent)",
            tofile=f"{key} (new)",
        )
    )


def validate(text: str, where: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Check a config offline; print its defaulted view, or the agent's error."""
    try:
        config = parse_network_config(text, where=where, backends=CONFIG_PARSERS)
    except ConfigError as exc:
        print(exc, file=err)
        return 1
    print(json.dumps(defaulted_view(config), indent=2), file=out)
    if not config.backend_type_given:
        print(default_type_notice(where), file=err)
    if notice := ipv6_half_notice(config, where):
        print(notice, file=err)
    return 0


def get(registry: Any, prefix: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the stored config and the agent's view of it (or why the agent refuses it)."""
    where = config_where(prefix)
    raw, revision = registry.get_config()
    if raw is None:
        print(f"{where} is missing; create it with: overlayd config set FILE", file=err)
        return 1
    print(f"# {where} (revision {revision}), as stored:", file=out)
    print(raw.decode(errors="replace").rstrip("\n"), file=out)
    print("# as the agent reads it (defaults filled in):", file=out)
    out.flush()
    return validate(raw.decode(errors="replace"), where, out, err)


def _renumber_warning(current: NetworkConfig | None, proposed: NetworkConfig, leases: list[Any]) -> str:
    """Why ``proposed`` needs --force: the live leases it would not hand out; "" when none."""
    outside = leases_outside(current, proposed, leases)
    if not outside:
        return ""
    change = f"from {describe(current, proposed)} to " if current is not None else ""
    return (
        f"this change ({change}{describe(proposed, current or proposed)}) does not hand out "
        f"{len(outside)} of {len(leases)} live lease(s): {name_leases(outside)}. Their agents keep "
        "the config in force (and report a config mismatch) until it is put back or they restart, "
        "and a restart renumbers the node: its running containers lose cross-host traffic until "
        "re-created. Add --force to write it anyway"
    )


def _parsed_or_none(raw: bytes | None, where: str) -> NetworkConfig | None:
    """The stored config, or None when missing or invalid (then every lease counts as live)."""
    if raw is None:
        return None
    try:
        return parse_network_config(raw, where=where, backends=CONFIG_PARSERS)
    except ConfigError:
        return None


def set_config(
    registry: Any,
    prefix: str,
    text: str,
    dry_run: bool,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    force: bool = False,
) -> int:
    """Validate ``text`` as the agent would, show the diff, and store it unless ``dry_run`` (or,
    without ``force``, it would renumber live leases: exit 1, nothing written)."""
    where = config_where(prefix)
    try:
        proposed = parse_network_config(text, where=where, backends=CONFIG_PARSERS)
    except ConfigError as exc:
        print(f"refused: {exc}", file=err)
        return 1
    current, _ = registry.get_config()
    diff = config_diff(current, text, f"{prefix.rstrip('/')}/config")
    if not diff:
        print(f"{where} already holds this config; nothing to write", file=out)
        return 0
    print(diff, end="", file=out)
    leases, _revision = registry.list_leases()
    warning = _renumber_warning(_parsed_or_none(current, where), proposed, leases)
    if warning and not force:
        print(f"refused: {warning}", file=err)
        return 1
    if warning:
        print(f"warning: {warning}; --force given", file=err)
    if dry_run:
        print("dry run: nothing written", file=out)
        return 0
    revision = registry.put_config(text.encode())
    print(
        f"wrote {where} (revision {revision}); agents waiting for a config start within seconds, "
        "running agents apply it within their reconcile interval (a new VNI, or EnableIPv4 turned on, "
        "makes them restart)",
        file=out,
    )
    return 0
