"""Find a CNI plugin in ``CNI_PATH`` and run it the way a runtime would."""

from __future__ import annotations

import sys

from . import jsonio, leanos, spawn
from .errors import CniError, DelegateFailed, InvalidEnvironment
from .netconf import check_plugin_name

# `typing`, `collections.abc` and `pathlib` would add ~10 ms to every CNI call (docs/benchmarks.md).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def find_plugin(plugin_type: str, cni_path: str) -> str:
    """The first executable named ``plugin_type`` in the ``:``-separated ``cni_path``."""
    check_plugin_name(plugin_type, "type")
    directories = [entry for entry in cni_path.split(leanos.PATHSEP) if entry]
    for directory in directories:
        candidate = leanos.join(directory, plugin_type)
        if leanos.is_file(candidate) and leanos.access(candidate, leanos.X_OK):
            return candidate
    install = (
        "install it with `overlayd install-cni --cni-bin-dir DIR` into one of these directories"
        if plugin_type == "flannel"
        else "install the CNI reference plugins into one of these directories"
    )
    raise InvalidEnvironment(
        f'plugin "{plugin_type}" not found in CNI_PATH {directories}; {install} or add their '
        "directory to CNI_PATH"
    )


def invoke(
    command: str, config: Mapping[str, Any], env: Mapping[str, str], type_key: str = "delegate.type"
) -> dict[str, Any] | None:
    """Run the plugin ``config["type"]`` with ``command``; return its parsed result, if any.

    ``env`` holds the CNI_* variables for the call (CNI_PATH among them); CNI_COMMAND is set
    here. A plugin error becomes DelegateFailed carrying the plugin's own code and message.
    ``type_key`` is what an error calls ``config["type"]``.
    """
    plugin_type = config["type"]
    check_plugin_name(plugin_type, type_key)
    ipam = config.get("ipam")
    if isinstance(ipam, dict) and "type" in ipam:  # run by the delegate, but named by us
        check_plugin_name(ipam["type"], "ipam.type")
    plugin = find_plugin(plugin_type, env.get("CNI_PATH", ""))
    completed = spawn.run(plugin, jsonio.dumps(config).encode(), {**env, "CNI_COMMAND": command})
    stderr = completed.stderr.decode(errors="replace").strip()
    if stderr:
        sys.stderr.write(f"{plugin_type}: {stderr}\n")
    output = completed.stdout.decode(errors="replace").strip()
    if completed.returncode != 0:
        raise _plugin_error(plugin_type, command, completed.returncode, output, stderr)
    if not output:
        return None
    try:
        result = jsonio.loads(output)
    except ValueError:
        raise CniError(
            f"{plugin_type} {command} succeeded but printed no JSON result", output[:500]
        ) from None
    if not isinstance(result, dict):
        raise CniError(f"{plugin_type} {command} printed {output[:100]!r}, not a JSON object")
    return result


def _plugin_error(plugin_type: str, command: str, returncode: int, output: str, stderr: str) -> CniError:
    """Translate a failed plugin's output into an error for our own caller."""
    try:
        error = jsonio.loads(output)
    except ValueError:
        error = None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return DelegateFailed(
            error["code"], f"{plugin_type}: {error.get('msg', '')}", error.get("details", "")
        )
    return CniError(
        f"{plugin_type} {command} failed with exit status {returncode} and no CNI error",
        (output or stderr)[:500],
    )
