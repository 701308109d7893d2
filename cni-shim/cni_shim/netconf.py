"""Build the delegate's network config from the flannel conflist entry and ``subnet.env`` (pure).

Keys and defaults are flannel's, so existing conflists work unchanged:

* ``subnetFile`` (``/run/flannel/subnet.env``) and ``dataDir`` (``/var/lib/cni/flannel``);
* ``delegate``: the delegated plugin's config; defaults ``type: bridge``, ``bridge: cni0``,
  ``isGateway: true``, ``ipMasq: !FLANNEL_IPMASQ``, ``mtu: FLANNEL_MTU``; user keys win;
* ``ipam``: extra host-local keys (``dataDir``, ``resolvConf``, ``routes``...); ``ranges`` is
  always this host's subnet, and a route to the whole overlay is appended;
* ``runtimeConfig``, ``args`` and ``dns`` are passed through to the delegate.

One key of our own: ``subnetFileTimeout`` (seconds, default 5): how long ADD waits for the agent
to write ``subnet.env`` before answering "try again later".
"""

from __future__ import annotations

from .errors import InvalidConfig, UnsupportedField
from .version import delegate_version

# Start-up cost: `typing` and `dataclasses` would add ~10 ms each to every CNI call (see
# docs/benchmarks.md), so annotations stay strings and records are plain classes.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from .subnetenv import AddressFamily, SubnetEnv

    T = TypeVar("T")

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
DEFAULT_SUBNET_FILE_TIMEOUT = 5.0

# Keys the shim owns in the delegate config. flannel rejected `name` and `ipam` there too: a
# second name would split host-local's allocations, a second ipam would hide ours.
_RESERVED_DELEGATE_KEYS = {
    "name": "the delegate always uses the network's name",
    "ipam": 'put IPAM settings in the top-level "ipam" key',
}
# Top-level keys copied unchanged into the delegate config.
_PASSED_THROUGH = ("runtimeConfig", "args", "dns")


class ShimConf:
    """The conflist entry for ``"type": "flannel"``, validated."""

    def __init__(
        self,
        *,
        name: str,
        cni_version: str,
        subnet_file: str,
        data_dir: str,
        subnet_file_timeout: float,
        delegate: dict[str, Any],
        ipam: dict[str, Any],
        passed_through: dict[str, Any],
    ) -> None:
        self.name = name
        self.cni_version = cni_version
        self.subnet_file = subnet_file
        self.data_dir = data_dir
        self.subnet_file_timeout = subnet_file_timeout
        self.delegate = delegate
        self.ipam = ipam
        self.passed_through = passed_through


def check_plugin_name(plugin_type: object, key: str) -> None:
    """Refuse a plugin type that is not a bare file name (InvalidConfig naming ``key``).

    A type is looked up in CNI_PATH and executed as root: ``"../../tmp/x"`` would run any file
    on the host, so, as libcni and flannel's plugin do, a name holding "/" is not a plugin
    name; neither are "", "." and ".." (directories) or control characters.
    """
    if (
        isinstance(plugin_type, str)
        and plugin_type not in ("", ".", "..")
        and "/" not in plugin_type
        and plugin_type.isprintable()
    ):
        return
    raise InvalidConfig(
        f'"{key}" {plugin_type!r} is not a plugin name; use the bare file name of a plugin in '
        'CNI_PATH, without "/", e.g. "bridge" (or "host-local" for ipam.type)'
    )


def parse_conf(config: dict[str, Any], cni_version: str, lenient: bool = False) -> ShimConf:
    """Validate the shim's own keys; raise InvalidConfig / UnsupportedField naming the key.

    With ``lenient`` (DEL), an invalid ``delegate``, ``ipam`` or ``subnetFileTimeout`` takes its
    default instead: DEL must release what ADD made before the conflist was broken, and flannel's
    DEL read nothing of it. The paths stay checked: they say where the saved state is.
    """

    def checked(parse: Callable[[dict[str, Any]], T], default: T) -> T:
        try:
            return parse(config)
        except (InvalidConfig, UnsupportedField):
            if not lenient:
                raise
            return default

    return ShimConf(
        name=config["name"],
        cni_version=cni_version,
        subnet_file=_path(config, "subnetFile", DEFAULT_SUBNET_FILE),
        data_dir=_path(config, "dataDir", DEFAULT_DATA_DIR),
        subnet_file_timeout=checked(_subnet_file_timeout, DEFAULT_SUBNET_FILE_TIMEOUT),
        delegate=checked(_delegate, {}),
        ipam=checked(_ipam, {}),
        passed_through={key: config[key] for key in _PASSED_THROUGH if key in config},
    )


def _delegate(config: dict[str, Any]) -> dict[str, Any]:
    delegate = _object(config, "delegate")
    for key, fix in _RESERVED_DELEGATE_KEYS.items():
        if key in delegate:
            raise UnsupportedField(f'"delegate.{key}" ({delegate[key]!r}) is not supported: {fix}')
    if not isinstance(delegate.get("type", "bridge"), str) or delegate.get("type") == "flannel":
        raise InvalidConfig(
            f'"delegate.type" {delegate.get("type")!r} is not a plugin name to delegate to; '
            'use "bridge" (the default) or another plugin type in CNI_PATH'
        )
    check_plugin_name(delegate.get("type", "bridge"), "delegate.type")
    return delegate


def _subnet_file_timeout(config: dict[str, Any]) -> float:
    timeout = config.get("subnetFileTimeout", DEFAULT_SUBNET_FILE_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise InvalidConfig(f'"subnetFileTimeout" {timeout!r} is not a number of seconds; use e.g. 5')
    return float(timeout)


def _ipam(config: dict[str, Any]) -> dict[str, Any]:
    ipam = _object(config, "ipam")
    if not isinstance(ipam.get("type", "host-local"), str):
        raise InvalidConfig(f'"ipam.type" {ipam["type"]!r} is not a plugin name; use e.g. "host-local"')
    check_plugin_name(ipam.get("type", "host-local"), "ipam.type")
    if not isinstance(ipam.get("routes", []), list):
        raise InvalidConfig(f'"ipam.routes" must be a list of {{"dst": ...}}, not {ipam["routes"]!r}')
    return ipam


def build_delegate(conf: ShimConf, subnet_env: SubnetEnv) -> dict[str, Any]:
    """The complete config for the delegated plugin (without ``prevResult``)."""
    delegate: dict[str, Any] = {
        "type": "bridge",
        "ipMasq": not subnet_env.ipmasq,
        "mtu": subnet_env.mtu,
    }
    if conf.delegate.get("type", "bridge") == "bridge":
        delegate.update(bridge="cni0", isGateway=True)
    delegate.update(conf.delegate)
    delegate.update(conf.passed_through)
    delegate["name"] = conf.name
    delegate["cniVersion"] = delegate_version(conf.cni_version)
    delegate["ipam"] = build_ipam(conf.ipam, subnet_env)
    return delegate


def build_ipam(user_ipam: dict[str, Any], subnet_env: SubnetEnv) -> dict[str, Any]:
    """host-local IPAM over this host's subnet(s), with the user's extra keys kept.

    The overlay route names its gateway although bridge would default to it: bridge's CHECK
    looks the route up by destination *and* gateway, so a route without ``gw`` fails CHECK.
    """
    gateways = [gateway(family) for family in subnet_env.families]
    overlay_routes = [
        {"dst": str(network), "gw": gw}
        for family, gw in zip(subnet_env.families, gateways, strict=True)
        for network in family.networks
    ]
    user_routes = user_ipam.get("routes", [])
    ipam: dict[str, Any] = {"type": "host-local", **user_ipam}
    ipam["ranges"] = [
        [{"subnet": str(family.subnet.network), "gateway": gw}]
        for family, gw in zip(subnet_env.families, gateways, strict=True)
    ]
    ipam["routes"] = user_routes + [r for r in overlay_routes if r not in user_routes]
    return ipam


def gateway(family: AddressFamily) -> str:
    """The bridge's address: FLANNEL_SUBNET's own address (flannel writes ``.1``), or the
    subnet's first address when the file names the bare network."""
    subnet = family.subnet
    if subnet.value == subnet.network.value:
        return subnet.with_value(subnet.value + 1).ip
    return subnet.ip


def _object(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, dict):
        raise InvalidConfig(f'"{key}" must be a JSON object, not {value!r}')
    return value


def _path(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidConfig(f'"{key}" {value!r} is not an absolute path; e.g. "{default}"')
    return value
