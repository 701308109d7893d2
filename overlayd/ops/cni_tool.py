"""``overlayd cni add|del|check <netns>``: run a conflist against a netns as a runtime would.

For containers attached by hand (``docker run --net=none``, a bare ``ip netns``): like the
reference ``cnitool``, but ADD refuses to attach twice, a failed ADD is rolled back (DEL of the
whole chain), as the spec asks of runtimes, and DEL and CHECK replay what ADD cached: its result,
its CNI_ARGS and its capability arguments. The cache is libcni's, so its tools can read ours.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from cni_shim.delegate import invoke
from cni_shim.errors import CniError
from cni_shim.state import write_file_atomically
from cni_shim.version import SUPPORTED_VERSIONS, at_least, version_key
from overlayd.ops.cni_target import CniTarget, resolve_target

CONF_DIR = Path("/etc/cni/net.d")
DEFAULT_CONFLIST = CONF_DIR / "10-flannel.conflist"
DEFAULT_CNI_PATH = "/opt/cni/bin:/usr/lib/cni"
DEFAULT_CACHE_DIR = Path("/var/lib/cni/results")
CACHE_KIND = "cniCacheV1"

# The first spec version at which a runtime passes prevResult to each command: chained ADD came
# in 0.3.0, the cached result on CHECK and DEL in 0.4.0 (SPEC.md; libcni DelNetworkList).
PREV_RESULT_SINCE = {"ADD": "0.3.0", "CHECK": "0.4.0", "DEL": "0.4.0"}

CniArgs = tuple[tuple[str, str], ...]
T = TypeVar("T")


class ToolError(Exception):
    """A problem with the helper's own inputs (conflist, cache), reported without a traceback."""


class UnreadableCache(ToolError):
    """The cache file exists but is not a cache entry; CHECK fails on it, DEL goes on without it."""


def run_cni_command(argv: list[str]) -> int:
    """Entry point for ``overlayd cni``; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="overlayd cni",
        description="Attach a network namespace to the CNI network of a conflist, or detach it. "
        f"Environment: CNI_PATH (default {DEFAULT_CNI_PATH}), CNI_CACHE_DIR (default "
        f"{DEFAULT_CACHE_DIR}), CNI_ARGS, and CAP_ARGS (JSON capability arguments, e.g. "
        "portMappings). check and del reuse the CNI_ARGS and CAP_ARGS that add cached.",
    )
    parser.add_argument("command", choices=("add", "del", "check"))
    parser.add_argument(
        "netns",
        help="netns path, a name from `ip netns`, or a Docker container's name or ID "
        "(`docker run --net=none`; DOCKER_HOST chooses the daemon)",
    )
    parser.add_argument(
        "--conflist", type=Path, help=f"default: {DEFAULT_CONFLIST}, else the first *.conflist in {CONF_DIR}"
    )
    parser.add_argument("--ifname", default="eth0", help="container interface (default eth0)")
    args = parser.parse_args(argv)
    try:
        target = resolve_target(args.netns)
        chain = Chain.load(args.conflist or default_conflist(), target, args.ifname, os.environ)
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


def choose_version(conflist: Mapping[str, Any]) -> str:
    """The newest version we speak among ``cniVersion`` and the 1.1 ``cniVersions`` list.

    As libcni: a list may offer versions newer than this tool knows next to ones it knows, so
    the unknown ones are skipped, not refused; only a list that leaves nothing usable fails.
    """
    offered = offered_versions(conflist)
    usable = [version for version in offered if version in SUPPORTED_VERSIONS]
    if not usable:
        raise ToolError(
            f"the conflist offers CNI versions {offered}, none of which this tool speaks; "
            f"set cniVersion to one of {list(SUPPORTED_VERSIONS)}"
        )
    return max(usable, key=version_key)


def offered_versions(conflist: Mapping[str, Any]) -> list[Any]:
    """``cniVersions`` plus ``cniVersion``; a list with neither is a legacy one, read as 0.1.0."""
    versions = conflist.get("cniVersions", [])
    if not isinstance(versions, list) or not all(isinstance(version, str) for version in versions):
        raise ToolError(f'"cniVersions" is {versions!r}; use a list of version strings, e.g. ["1.1.0"]')
    declared = conflist.get("cniVersion")
    if declared is None and "cniVersions" not in conflist:
        declared = "0.1.0"  # libcni sends "" then, which plugins read as 0.1.0
    return versions if declared is None else [*versions, declared]


def list_flag(conflist: Mapping[str, Any], key: str) -> bool:
    """A conflist boolean as libcni reads it: true/false, or those words as a string in any case."""
    value = conflist.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ToolError(f'"{key}" is {value!r}; use true or false')


class Chain:
    """One conflist applied to one (netns, ifname): the plugins, their env and the cache."""

    def __init__(
        self,
        conflist: dict[str, Any],
        conflist_bytes: bytes,
        source: Path,
        target: CniTarget,
        ifname: str,
        environ: Mapping[str, str],
    ) -> None:
        name = conflist.get("name")
        plugins = conflist.get("plugins")
        if not isinstance(name, str) or not isinstance(plugins, list) or not plugins:
            raise ToolError(f'{source}: a conflist needs "name" and a non-empty "plugins" list')
        self.name = name
        self.plugins: list[dict[str, Any]] = plugins
        try:
            self.cni_version = choose_version(conflist)
            self.disable_check = list_flag(conflist, "disableCheck")
        except ToolError as err:
            raise ToolError(f"{source}: {err}") from None
        self.conflist_bytes = conflist_bytes
        self.netns = target.netns
        self.target = target
        self.container_id = target.container_id
        self.ifname = ifname
        self.cni_args = _cni_args_from_env(environ.get("CNI_ARGS", ""))
        self.capability_args = _capability_args(environ.get("CAP_ARGS", ""))
        self.base_env = {
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": environ.get("CNI_PATH", DEFAULT_CNI_PATH),
            "PATH": environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        }
        cache_dir = Path(environ.get("CNI_CACHE_DIR", str(DEFAULT_CACHE_DIR)))
        self.cache_path = cache_dir / f"{name}-{self.container_id}-{ifname}"

    @classmethod
    def load(cls, path: Path, target: CniTarget, ifname: str, environ: Mapping[str, str]) -> Chain:
        try:
            conflist_bytes = path.read_bytes()
            conflist = json.loads(conflist_bytes)
        except (OSError, ValueError) as err:
            raise ToolError(f"cannot read conflist {path}: {err}") from None
        if not isinstance(conflist, dict):
            raise ToolError(f"{path} is not a JSON object")
        return cls(conflist, conflist_bytes, path, target, ifname, environ)

    @property
    def env(self) -> dict[str, str]:
        """The CNI_* variables of every call; CNI_ARGS as libcni joins its pairs."""
        return {**self.base_env, "CNI_ARGS": ";".join(f"{key}={value}" for key, value in self.cni_args)}

    def add(self) -> dict[str, Any]:
        """ADD through the chain; cache the final result; on failure DEL the whole chain."""
        if not self.netns:
            raise ToolError(f"{self.target.described} is not running, so it has no network namespace; "
                            "start it first")
        if self.cache_path.exists():
            raise ToolError(
                f"{self.target.described} already has {self.ifname} on {self.name} "
                f"(cache {self.cache_path}); run `overlayd cni del` first"
            )
        result: dict[str, Any] | None = None
        try:
            for plugin in self.plugins:
                result = self._call("ADD", plugin, result)
        except CniError:
            self._delete_chain(result, quiet=True)
            raise
        final = result or {"cniVersion": self.cni_version}
        write_file_atomically(self.cache_path, json.dumps(self._cache_entry(final)).encode())
        return final

    def delete(self) -> None:
        """DEL through the chain in reverse, replaying the cache; then drop the cache.

        DEL is best effort (SPEC): an unreadable cache must not keep the plugins from releasing
        what they hold, so it is reported, DEL runs without it, and it goes with the attachment.
        """
        try:
            entry = self._read_cache()
        except UnreadableCache as err:
            sys.stderr.write(
                f"overlayd cni del: warning: {err}; running DEL without the cached result, "
                "then removing the cache\n"
            )
            entry = None
        if entry is not None:
            self._replay(entry)
        self._delete_chain(None if entry is None else entry["result"], quiet=False)
        self.cache_path.unlink(missing_ok=True)

    def check(self) -> None:
        """CHECK through the chain, replaying the cache; nothing when the list sets disableCheck."""
        if not at_least(self.cni_version, "0.4.0"):
            raise ToolError(f"cniVersion {self.cni_version} has no CHECK; it needs 0.4.0 or newer")
        if self.disable_check:
            # SPEC: runtimes must not call CHECK for such a list, so there is nothing to fail.
            sys.stderr.write(f"overlayd cni check: {self.name} sets disableCheck; no plugin was checked\n")
            return
        try:
            entry = self._read_cache()
        except UnreadableCache as err:
            raise ToolError(f"{err}; `overlayd cni del` removes it, then add again") from None
        if entry is None:
            raise ToolError(f"no cached result in {self.cache_path}; run `overlayd cni add` first")
        self._replay(entry)
        for plugin in self.plugins:
            self._call("CHECK", plugin, entry["result"])

    def _delete_chain(self, prev_result: dict[str, Any] | None, *, quiet: bool) -> None:
        for plugin in reversed(self.plugins):
            try:
                self._call("DEL", plugin, prev_result)
            except CniError as err:
                if not quiet:
                    raise
                sys.stderr.write(f"cleanup DEL of {plugin.get('type')}: {err.msg}\n")

    def _call(
        self, command: str, plugin: dict[str, Any], prev_result: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        return invoke(command, self._plugin_config(command, plugin, prev_result), self.env, "plugins[].type")

    def _plugin_config(
        self, command: str, plugin: dict[str, Any], prev_result: dict[str, Any] | None
    ) -> dict[str, Any]:
        """One plugin's stdin: its entry as written, plus what libcni injects.

        That is the network's name and version, ``runtimeConfig`` for the capabilities the
        entry enables, and ``prevResult`` from the version that has it for ``command``.
        """
        config = {**plugin, "name": self.name, "cniVersion": self.cni_version}
        runtime_config = {
            cap: self.capability_args[cap]
            for cap, enabled in plugin.get("capabilities", {}).items()
            if enabled and cap in self.capability_args
        }
        if runtime_config:
            config["runtimeConfig"] = runtime_config
        if prev_result is not None and at_least(self.cni_version, PREV_RESULT_SINCE[command]):
            config["prevResult"] = prev_result
        return config

    def _replay(self, entry: Mapping[str, Any]) -> None:
        """Use the CNI_ARGS and capability arguments ADD cached, so DEL and CHECK see what ADD did.

        portmap, for one, removes its rules on DEL only when it gets the port mappings again.
        The cached values win; the environment's count only where ADD had none.
        """
        self.cni_args = _prefer_cached("CNI_ARGS", entry["cniArgs"], self.cni_args)
        self.capability_args = _prefer_cached("CAP_ARGS", entry["capabilityArgs"], self.capability_args)

    def _read_cache(self) -> dict[str, Any] | None:
        """The entry ADD cached, with ``cniArgs`` as pairs; None when there is none."""
        try:
            entry = json.loads(self.cache_path.read_bytes())
            if not isinstance(entry, dict) or not isinstance(entry.get("result"), dict):
                raise ValueError("no result object in it")
            capability_args = entry.get("capabilityArgs") or {}
            if not isinstance(capability_args, dict):
                raise ValueError(f"capabilityArgs {capability_args!r} is not an object")
            cni_args = _cached_cni_args(entry.get("cniArgs"))
            return {**entry, "cniArgs": cni_args, "capabilityArgs": capability_args}
        except FileNotFoundError:
            return None
        except ValueError as err:
            raise UnreadableCache(f"cache {self.cache_path} is unreadable ({err})") from None

    def _cache_entry(self, result: dict[str, Any]) -> dict[str, Any]:
        """libcni's cachedInfo, so its tools (GetNetworkListCachedConfig, GC) can read ours."""
        entry: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": self.container_id,
            "config": base64.b64encode(self.conflist_bytes).decode(),
            "ifName": self.ifname,
            "networkName": self.name,
            "netns": self.netns,
            "result": result,
        }
        # Empty ones are left out, as Go's omitempty does: libcni reads cniArgs only as pairs.
        if self.cni_args:
            entry["cniArgs"] = self.cni_args
        if self.capability_args:
            entry["capabilityArgs"] = self.capability_args
        return entry


def _prefer_cached(variable: str, cached: T, given: T) -> T:
    """``cached`` unless empty; says so when it overrides a different ``given``."""
    if not cached:
        return given
    if given and given != cached:
        sys.stderr.write(f"overlayd cni: {variable} differs from ADD's; using ADD's, from the cache\n")
    return cached


def _parse_cni_args(text: str) -> CniArgs:
    """``K=V;K2=V2`` as pairs; empty for ""; ValueError naming a pair that is not KEY=VALUE."""
    if not text:
        return ()
    pairs = []
    for pair in text.split(";"):
        key, equals, value = pair.partition("=")
        if not key or not equals or not value or "=" in value:
            raise ValueError(f"pair {pair!r} is not KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)


def _cni_args_from_env(text: str) -> CniArgs:
    try:
        return _parse_cni_args(text)
    except ValueError as err:
        raise ToolError(
            f"CNI_ARGS {text!r}: {err}; use KEY=VALUE pairs joined by ';', e.g. IgnoreUnknown=1;FOO=bar"
        ) from None


def _cached_cni_args(value: Any) -> CniArgs:
    """libcni's ``[[key, value], ...]``; also the ``K=V;...`` string overlayd cached before."""
    if value is None:
        return ()
    if isinstance(value, str):
        return _parse_cni_args(value)
    if isinstance(value, list) and all(_is_pair(pair) for pair in value):
        return tuple((key, val) for key, val in value)
    raise ValueError(f"cniArgs {value!r} is not a list of [key, value] pairs")


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(part, str) for part in value)


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
