"""Parse the agent's ``subnet.env`` (pure; the shim must not import overlayd).

The file is flannel's format, ``KEY=VALUE`` lines written by the agent once it holds a lease::

    FLANNEL_NETWORK=198.18.0.0/16
    FLANNEL_SUBNET=198.18.5.1/24
    FLANNEL_MTU=1450
    FLANNEL_IPMASQ=false
    FLANNEL_IPV6_NETWORK=2001:db8::/48      (optional, dual stack)
    FLANNEL_IPV6_SUBNET=2001:db8:0:5::1/64  (optional, dual stack)

A NETWORK may list several prefixes, comma-separated, as flanneld writes for a config with more
than one network; each gets its route.
"""

from __future__ import annotations

from .prefix import Prefix, parse_prefix

# Go's strconv.ParseBool spellings. The agent and flanneld write only true or false; flannel's
# plugin compares with "true" and reads anything else as false, where another spelling here is
# read as ParseBool reads it, and text that is not a boolean is an error naming it.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


# The agent writes six short lines; anything this large is some other file.
MAX_SIZE = 64 * 1024


class SubnetEnvError(ValueError):
    """The file exists but cannot be used; the message names the key and the fix."""


# Records are plain classes: `dataclasses` would add ~10 ms to every CNI call (docs/benchmarks.md).
class AddressFamily:
    """One family's overlay: its whole network(s) and this host's subnet (with its gateway)."""

    def __init__(self, *, networks: tuple[Prefix, ...], subnet: Prefix) -> None:
        self.networks = networks
        self.subnet = subnet


class SubnetEnv:
    """What the agent tells the plugin about this host's share of the overlay."""

    def __init__(self, *, families: tuple[AddressFamily, ...], mtu: int, ipmasq: bool) -> None:
        self.families = families
        self.mtu = mtu
        self.ipmasq = ipmasq


def parse_subnet_env(text: str, source: str = "subnet.env") -> SubnetEnv:
    """Parse the file's text; raise SubnetEnvError naming ``source`` and the bad key."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            # The line itself is not quoted: `subnetFile` may name any file (a conflist is
            # config, not code), and an error message must not carry its content to the logs.
            raise _broken(source, f"line {lineno} is not KEY=VALUE (it has no '=')")
        values[key.strip()] = value.strip().strip('"')

    families = tuple(
        family
        for family in (
            _family(values, source, "FLANNEL_NETWORK", "FLANNEL_SUBNET", 4),
            _family(values, source, "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET", 6),
        )
        if family is not None
    )
    if not families:
        raise _broken(source, "FLANNEL_NETWORK and FLANNEL_SUBNET missing (and no IPv6 pair either)")

    mtu_text = values.get("FLANNEL_MTU")
    if mtu_text is None:
        raise _broken(source, "FLANNEL_MTU missing")
    if not mtu_text.isdigit() or not 68 <= int(mtu_text) <= 65535:
        raise _broken(source, f"FLANNEL_MTU {mtu_text!r} is not an MTU between 68 and 65535")

    ipmasq_text = values.get("FLANNEL_IPMASQ")
    if ipmasq_text is None:
        raise _broken(source, "FLANNEL_IPMASQ missing")
    if ipmasq_text not in _TRUE | _FALSE:
        raise _broken(source, f"FLANNEL_IPMASQ {ipmasq_text!r} is not true or false")

    return SubnetEnv(families=families, mtu=int(mtu_text), ipmasq=ipmasq_text in _TRUE)


def _broken(source: str, problem: str) -> SubnetEnvError:
    return SubnetEnvError(
        f"{source}: {problem}; the overlayd agent writes this file: restart it to rewrite it, "
        'or fix the conflist\'s "subnetFile" if it names another file'
    )


def _family(
    values: dict[str, str], source: str, network_key: str, subnet_key: str, ip_version: int
) -> AddressFamily | None:
    """Parse one NETWORK/SUBNET pair; both or neither must be present."""

    network_text, subnet_text = values.get(network_key), values.get(subnet_key)
    if network_text is None and subnet_text is None:
        return None
    if network_text is None or subnet_text is None:
        present, missing = (network_key, subnet_key) if subnet_text is None else (subnet_key, network_key)
        raise _broken(source, f"{missing} missing while {present} is set")
    try:
        # Host bits in the network are cleared, as Go's net.ParseCIDR (flannel's plugin) does.
        networks = tuple(parse_prefix(text.strip()).network for text in network_text.split(","))
    except ValueError as err:
        raise _broken(source, f"{network_key} {network_text!r} is not a network ({err})") from None
    try:
        subnet = parse_prefix(subnet_text)
    except ValueError as err:
        raise _broken(source, f"{subnet_key} {subnet_text!r} is not an address/prefix ({err})") from None
    if subnet.version != ip_version or any(network.version != ip_version for network in networks):
        raise _broken(source, f"{network_key}/{subnet_key} must be IPv{ip_version}")
    if not any(subnet.inside(network) for network in networks):
        raise _broken(source, f"{subnet_key} {subnet_text} is not inside {network_key} {network_text}")
    return AddressFamily(networks=networks, subnet=subnet)


def read_subnet_env(path: str) -> SubnetEnv:
    """Read and parse the file; FileNotFoundError means the agent has not written it yet."""
    with open(path, "rb") as stream:
        data = stream.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:  # not the agent's few lines: a wrong subnetFile, say /dev/zero
        raise _broken(path, f"larger than {MAX_SIZE} bytes, not a subnet.env")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _broken(path, f"not UTF-8 text (byte {err.start})") from None
    return parse_subnet_env(text, source=path)
