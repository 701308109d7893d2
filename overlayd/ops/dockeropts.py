"""``overlayd docker-opts``: flannel's ``mk-docker-opts.sh``, Docker daemon options from subnet.env.

Docker's own bridge (``docker0``) then takes this host's overlay subnet and MTU. Docker should
masquerade only when the agent does not (``--ip-masq=!FLANNEL_IPMASQ``), so traffic between
overlay subnets is never NATed twice. The output file has the same variables as the script's:
``DOCKER_OPT_BIP``, ``DOCKER_OPT_IPMASQ``, ``DOCKER_OPT_MTU`` and the combined key (``DOCKER_OPTS``
unless ``-k`` names another, such as ``DOCKER_NETWORK_OPTIONS`` in flannel's unit file).

As in the script, options already in the environment under the combined key (``$DOCKER_OPTS``,
or ``-k``'s variable) come first in the combined line, so a unit that sets its own Docker options
keeps them; and a ``FLANNEL_IPMASQ`` other than ``true`` or ``false`` is an error (exit 1), not
silently dropped, unless ``-m`` leaves ``--ip-masq`` out anyway.

An IPv6-only network's subnet.env has no FLANNEL_SUBNET; the script then writes no ``--bip`` and
the rest as usual, and so does this (Docker's bridge keeps an IPv4 subnet of its own, outside
the overlay: ``ipv6_only_notice`` says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

REQUIRED_KEYS = ("FLANNEL_SUBNET", "FLANNEL_MTU")


class DockerOptsError(ValueError):
    """subnet.env lacks what Docker needs; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class DockerOpts:
    """Which lines to write, as mk-docker-opts.sh's -i, -c, -m and -k choose them."""

    combined_key: str = "DOCKER_OPTS"
    individual: bool = True
    combined: bool = True
    ip_masq: bool = True  # False: leave --ip-masq out (-m, for old Docker versions)


def render_docker_opts(
    subnet_env: Mapping[str, str], choice: DockerOpts, where: str, existing: str = ""
) -> str:
    """The env file's text: individual ``DOCKER_OPT_*`` lines, then the combined line, which starts
    with ``existing`` (the combined key's value in the environment) when that is set."""
    ipv6_only = is_ipv6_only(subnet_env)
    required = ("FLANNEL_MTU",) if ipv6_only else REQUIRED_KEYS  # an IPv6-only file has no FLANNEL_SUBNET
    missing = [key for key in required if not subnet_env.get(key)]
    if missing:
        raise DockerOptsError(
            f"{where}: {', '.join(missing)} missing; wait for the agent to write it "
            "(overlayd status shows why it has not)"
        )
    options = {
        "DOCKER_OPT_BIP": "" if ipv6_only else f"--bip={subnet_env['FLANNEL_SUBNET']}",
        "DOCKER_OPT_IPMASQ": "",
        "DOCKER_OPT_MTU": f"--mtu={subnet_env['FLANNEL_MTU']}",
    }
    agent_masq = subnet_env.get("FLANNEL_IPMASQ", "")
    if choice.ip_masq and agent_masq:
        if agent_masq not in ("true", "false"):
            raise DockerOptsError(
                f"{where}: invalid value of FLANNEL_IPMASQ: {agent_masq!r}; it must be true or false, as "
                "the agent writes it (or give -m to leave --ip-masq out)"
            )
        options["DOCKER_OPT_IPMASQ"] = f"--ip-masq={'false' if agent_masq == 'true' else 'true'}"
    lines = []
    if choice.individual:
        lines += [f'{key}="{value}"' for key, value in options.items() if value]
    if choice.combined:
        joined = "".join(f" {value}" for value in options.values() if value)
        if existing:  # the script's separator: one space after them, then each option's own
            joined = f"{existing} {joined}"
        lines.append(f'{choice.combined_key}="{joined}"')
    return "".join(f"{line}\n" for line in lines)


def is_ipv6_only(subnet_env: Mapping[str, str]) -> bool:
    """Whether subnet.env is an IPv6-only network's: IPv6 lines and no IPv4 ones."""
    has_ipv4 = "FLANNEL_NETWORK" in subnet_env or "FLANNEL_SUBNET" in subnet_env
    return not has_ipv4 and bool(subnet_env.get("FLANNEL_IPV6_SUBNET"))


def ipv6_only_notice(subnet_env: Mapping[str, str], where: str) -> str | None:
    """What an operator should know when subnet.env is IPv6-only (None otherwise)."""
    if not is_ipv6_only(subnet_env):
        return None
    return (
        f"{where} is an IPv6-only network's (FLANNEL_IPV6_SUBNET {subnet_env['FLANNEL_IPV6_SUBNET']}, no "
        "FLANNEL_SUBNET): no --bip written, as flannel's mk-docker-opts.sh does; Docker's bridge keeps "
        "its own IPv4 subnet, outside the overlay. Give Docker the IPv6 subnet yourself (--ipv6 "
        "--fixed-cidr-v6) to put its containers on the overlay"
    )
