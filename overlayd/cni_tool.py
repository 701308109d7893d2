"""``overlayd cni add|del|check <netns>``: run a conflist against a netns as a runtime would.

For containers attached by hand (``docker run --net=none``, a bare ``ip netns``): like the
reference ``cnitool``, but DEL and CHECK replay the cached ADD result, ADD refuses to attach
twice, and a failed ADD is rolled back (DEL of the whole chain), as the spec asks of runtimes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cni_shim.delegate import invoke
from cni_shim.errors import CniError
from cni_shim.state import write_file_atomically
from cni_shim.version import SUPPORTED_VERSIONS, at_least, version_key

CONF_DIR = Path("/etc/cni/net.d")
DEFAULT_CONFLIST = CONF_DIR / "10-flannel.conflist"
DEFAULT_CNI_PATH = "/opt/cni/bin:/usr/lib/cni"
DEFAULT_CACHE_DIR = Path("/var/lib/cni/results")


class ToolError(Exception):
    """A problem with the helper's own inputs (conflist, cache), reported without a traceback."""


def run_cni_command(argv: list[str]) -> int:
    """Entry point for ``overlayd cni``; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="overlayd cni",
        description="Attach a network namespace to the CNI network of a conflist, or detach it. "
        f"Environment: CNI_PATH (default {DEFAULT_CNI_PATH}), CNI_CACHE_DIR (default "
        f"{DEFAULT_CACHE_DIR}), CNI_ARGS, and CAP_ARGS (JSON capability arguments, e.g. "
        "portMappings).",
    )
    parser.add_argument("command", choices=("add", "del", "check"))
    parser.add_argument("netns", help="netns path, or a name from `ip netns`")
    parser.add_argument(
        "--conflist", type=Path, help=f"default: {DEFAULT_CONFLIST}, else the first *.conflist in {CONF_DIR}"
    )
    parser.add_argument("--ifname", default="eth0", help="container interface (default eth0)")
    args = parser.parse_args(argv)
    try:
        chain = Chain.load(args.conflist or default_conflist(), args.netns, args.ifname, os.environ)
        if args.command == "add":
            sys.stdout.write(json.dumps(chain.add(), indent=4) + "\n")
        elif args.command == "del":
            chain.delete()
        else:
            chain.check()
    except CniError as err:
        details = f" ({err.details})" if err.details else ""
        sys.stderr.write(f"overlayd cni {args.command}: error {err.code}: {err.msg}{details}\n")
        return 1
    except (ToolError, OSError) as err:
        sys.stderr.write(f"overlayd cni {args.command}: {err}\n")
        return 1
    return 0


def default_conflist() -> Path:
    """10-flannel.conflist if present, else the first conflist by name, as runtimes pick."""
    if DEFAULT_CONFLIST.exists():
        return DEFAULT_CONFLIST
    found = sorted(CONF_DIR.glob("*.conflist"))
    if not found:
        raise ToolError(f"no *.conflist in {CONF_DIR}; pass --conflist PATH")
    return found[0]


def netns_path(netns: str) -> str:
    """A path as given; a bare name means ``ip netns``'s /var/run/netns/<name>."""
    return netns if "/" in netns else f"/var/run/netns/{netns}"


def container_id_for(netns: str) -> str:
    """A stable container ID per netns path (cnitool hashes the path too)."""
    return "overlayd-" + hashlib.sha512(netns.encode()).hexdigest()[:16]


def choose_version(conflist: Mapping[str, Any]) -> str:
    """The conflist's cniVersion; from a 1.1 ``cniVersions`` list, the newest we speak."""
    versions = conflist.get("cniVersions")
    if isinstance(versions, list):
        usable = [v for v in versions if v in SUPPORTED_VERSIONS]
        if not usable:
            raise ToolError(f"cniVersions {versions} has none of {list(SUPPORTED_VERSIONS)}")
        return max(usable, key=version_key)
    version = conflist.get("cniVersion", "0.1.0")
    if version not in SUPPORTED_VERSIONS:
        raise ToolError(f"cniVersion {version!r} is not one of {list(SUPPORTED_VERSIONS)}")
    return version


class Chain:
    """One conflist applied to one (netns, ifname): the plugins, their env and the cache."""

    def __init__(
        self,
        conflist: dict[str, Any],
        source: Path,
        netns: str,
        ifname: str,
        environ: Mapping[str, str],
    ) -> None:
        name = conflist.get("name")
        plugins = conflist.get("plugins")
        if not isinstance(name, str) or not isinstance(plugins, list) or not plugins:
            raise ToolError(f'{source}: a conflist needs "name" and a non-empty "plugins" list')
        self.name = name
        self.plugins: list[dict[str, Any]] = plugins
        self.cni_version = choose_version(conflist)
        self.netns = netns_path(netns)
        self.container_id = container_id_for(self.netns)
        self.ifname = ifname
        self.env = {
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": environ.get("CNI_ARGS", ""),
            "CNI_PATH": environ.get("CNI_PATH", DEFAULT_CNI_PATH),
            "PATH": environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        }
        self.capability_args = _capability_args(environ.get("CAP_ARGS", ""))
        cache_dir = Path(environ.get("CNI_CACHE_DIR", str(DEFAULT_CACHE_DIR)))
        self.cache_path = cache_dir / f"{name}-{self.container_id}-{ifname}"

    @classmethod
    def load(cls, path: Path, netns: str, ifname: str, environ: Mapping[str, str]) -> Chain:
        try:
            conflist = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ToolError(f"cannot read conflist {path}: {err}") from None
        if not isinstance(conflist, dict):
            raise ToolError(f"{path} is not a JSON object")
        return cls(conflist, path, netns, ifname, environ)

    def add(self) -> dict[str, Any]:
        """ADD through the chain; cache the final result; on failure DEL the whole chain."""
        if self.cache_path.exists():
            raise ToolError(
                f"{self.netns} already has {self.ifname} on {self.name} (cache {self.cache_path}); "
                "run `overlayd cni del` first"
            )
        result: dict[str, Any] | None = None
        try:
            for plugin in self.plugins:
                result = invoke("ADD", self._plugin_config(plugin, result), self.env)
        except CniError:
            self._delete_chain(result, quiet=True)
            raise
        final = result or {"cniVersion": self.cni_version}
        write_file_atomically(self.cache_path, json.dumps(self._cache_entry(final)).encode())
        return final

    def delete(self) -> None:
        """DEL through the chain in reverse with the cached result; then drop the cache."""
        self._delete_chain(self._cached_result(), quiet=False)
        self.cache_path.unlink(missing_ok=True)

    def check(self) -> None:
        """CHECK through the chain with the cached result."""
        if not at_least(self.cni_version, "0.4.0"):
            raise ToolError(f"cniVersion {self.cni_version} has no CHECK; it needs 0.4.0 or newer")
        cached = self._cached_result()
        if cached is None:
            raise ToolError(f"no cached result in {self.cache_path}; run `overlayd cni add` first")
        for plugin in self.plugins:
            invoke("CHECK", self._plugin_config(plugin, cached), self.env)

    def _delete_chain(self, prev_result: dict[str, Any] | None, *, quiet: bool) -> None:
        for plugin in reversed(self.plugins):
            try:
                invoke("DEL", self._plugin_config(plugin, prev_result), self.env)
            except CniError as err:
                if not quiet:
                    raise
                sys.stderr.write(f"cleanup DEL of {plugin.get('type')}: {err.msg}\n")

    def _plugin_config(self, plugin: dict[str, Any], prev_result: dict[str, Any] | None) -> dict[str, Any]:
        """One plugin's stdin: its entry, the network's name and version, runtimeConfig."""
        config = {k: v for k, v in plugin.items() if k != "capabilities"}
        config.update(name=self.name, cniVersion=self.cni_version)
        runtime_config = {
            cap: self.capability_args[cap]
            for cap, enabled in plugin.get("capabilities", {}).items()
            if enabled and cap in self.capability_args
        }
        if runtime_config:
            config["runtimeConfig"] = runtime_config
        if prev_result is not None and at_least(self.cni_version, "0.3.0"):
            config["prevResult"] = prev_result
        return config

    def _cached_result(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.cache_path.read_text())["result"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as err:
            raise ToolError(f"cache {self.cache_path} is unreadable ({err}); remove it") from None

    def _cache_entry(self, result: dict[str, Any]) -> dict[str, Any]:
        """The reference runtime's cache layout, so its tools can read ours."""
        return {
            "kind": "cniCacheV1",
            "containerId": self.container_id,
            "ifName": self.ifname,
            "networkName": self.name,
            "netns": self.netns,
            "cniArgs": self.env["CNI_ARGS"],
            "capabilityArgs": self.capability_args,
            "result": result,
        }


def _capability_args(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ToolError(f"CAP_ARGS is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise ToolError('CAP_ARGS must be a JSON object, e.g. {"portMappings": [...]}')
    return value


if __name__ == "__main__":
    sys.exit(run_cni_command(sys.argv[1:]))
