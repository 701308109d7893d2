"""``flannel`` CNI plugin entry point: the protocol layer.

``run`` takes the environment and stdin as arguments and returns the exit status and stdout,
so the whole protocol (validation, versions, error JSON) is tested with a dict and a string.
The work itself is in ``commands``; every failure is a typed ``CniError`` whose spec code is
written out here, at the boundary. Start-up is kept cheap: VERSION imports nothing beyond this
module, and ``json`` only to report an error.
"""

from __future__ import annotations

import sys

from . import leanos
from .errors import (
    CniError,
    DecodeFailure,
    IncompatibleVersion,
    InvalidConfig,
    InvalidEnvironment,
    IOFailure,
)
from .version import LATEST_VERSION, SUPPORTED_VERSIONS, at_least

# `typing` alone would double the start-up time of every CNI call; annotations only need names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, BinaryIO, NoReturn, TextIO

# The variables each command needs (empty counts as unset, as the reference runtime sends
# empty values for the ones that do not apply).
_REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}
# The spec version that introduced each command.
_MIN_CONFIG_VERSION = {"ADD": "0.1.0", "DEL": "0.1.0", "CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}

_SUPPORTED_LIST = ", ".join(f'"{version}"' for version in SUPPORTED_VERSIONS)
_VERSION_REPLY = f'{{"cniVersion": "{LATEST_VERSION}", "supportedVersions": [{_SUPPORTED_LIST}]}}\n'

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


# A runtime sends the conflist entry with `prevResult`, `runtimeConfig` and, for GC, the list of
# valid attachments: kilobytes, and ~100 bytes per attachment. 1 MiB holds ~10,000 attachments,
# far beyond any node, while a runaway or hostile writer can no longer make us buffer gigabytes.
MAX_STDIN = 1 << 20
_READ_CHUNK = 1 << 16
# The kernel's IFNAMSIZ (16) less the terminating NUL; counted in bytes, as the kernel counts.
_MAX_IFNAME_BYTES = 15


def main() -> NoReturn:
    """Console entry point: the runtime's environment and stdin in, CNI JSON on stdout.

    Exits with ``os._exit`` once stdout is flushed: every file the call wrote is closed and
    the delegate has been waited for, so the interpreter's teardown (~1 ms of each
    container start) has nothing left to do.
    """
    exit_code, output = run(leanos.environ(), sys.stdin.buffer)
    sys.stdout.write(output)
    sys.stdout.flush()
    sys.stderr.flush()
    leanos._exit(exit_code)


def run(env: Mapping[str, str], stdin: BinaryIO | TextIO) -> tuple[int, str]:
    """Execute one CNI call; return (exit status, text for stdout)."""
    reply_version = LATEST_VERSION
    try:
        command = env.get("CNI_COMMAND", "")
        if command == "VERSION":
            # Like the reference plugins: stdin is not read, so VERSION from a shell never blocks.
            return 0, _VERSION_REPLY
        if command not in _REQUIRED_ENV:
            raise InvalidEnvironment(
                f"unknown CNI_COMMAND {command!r}; use one of ADD, DEL, CHECK, STATUS, GC, VERSION"
                if command
                else "required env variables [CNI_COMMAND] missing"
            )
        missing = [name for name in _REQUIRED_ENV[command] if not env.get(name)]
        if missing:
            raise InvalidEnvironment(f"required env variables [{','.join(missing)}] missing")
        config = _parse_config(_read(stdin))
        reply_version = cni_version = _config_version(config)
        _check_version_allows(cni_version, command)
        if command not in ("STATUS", "GC"):
            _validate_identifiers(env)

        from .commands import dispatch  # the work, and its imports, only when there is work

        return 0, dispatch(command, env, config, cni_version)
    except CniError as err:
        return 1, _error_json(err, reply_version)
    except OSError as err:
        return 1, _error_json(IOFailure(f"{err.strerror or err}: {err.filename or ''}"), reply_version)
    except Exception as err:  # a bug must still reach the runtime as an error, not a traceback
        import traceback

        traceback.print_exc()
        return 1, _error_json(CniError(f"internal error: {err!r}"), reply_version)


def _read(stdin: BinaryIO | TextIO) -> str:
    """Stdin as text, at most MAX_STDIN bytes (characters, for a text stream).

    Read in chunks: one ``read(MAX_STDIN + 1)`` would allocate (and map) a whole MiB on every
    call for the kilobyte a runtime sends.
    """
    chunks: list[Any] = []
    size = 0
    try:
        while size <= MAX_STDIN:
            chunk = stdin.read(_READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (OSError, UnicodeDecodeError) as err:
        raise IOFailure(f"error reading the network config from stdin: {err}") from None
    data = (b"" if chunks and isinstance(chunks[0], bytes) else "").join(chunks)
    if len(data) > MAX_STDIN:
        raise InvalidConfig(
            f"network config on stdin is larger than {MAX_STDIN} bytes (1 MiB); a runtime sends a "
            "few kilobytes: check the conflist and what calls the plugin"
        )
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DecodeFailure(f"network config on stdin is not UTF-8 (byte {err.start})") from None


def _parse_config(text: str) -> dict[str, Any]:
    """Decode stdin; validate the keys every CNI config has."""
    from .jsonio import loads  # not for VERSION

    try:
        config = loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: absurdly deep nesting
        raise DecodeFailure(f"network config on stdin is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise DecodeFailure(f"network config on stdin must be a JSON object, not {text[:50]!r}")
    name = config.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidConfig('network config has no "name"; add the network\'s name to the conflist')
    if not _is_identifier(name):
        raise InvalidConfig(
            f"network name {name!r} has invalid characters; "
            "use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    if not isinstance(config.get("type"), str):
        raise InvalidConfig('network config has no "type"')
    return config


def _config_version(config: dict[str, Any]) -> str:
    """The config's ``cniVersion`` if we speak it.

    A missing, null or empty cniVersion is 0.1.0, as the reference library reads it: a conflist
    without one reaches every plugin as ``"cniVersion": ""``.
    """
    version = config.get("cniVersion") or "0.1.0"
    if not isinstance(version, str):
        raise DecodeFailure(f'"cniVersion" must be a string like "1.0.0", not {version!r}')
    if version not in SUPPORTED_VERSIONS:
        raise IncompatibleVersion(
            "incompatible CNI versions",
            f'config is "{version}", plugin supports {list(SUPPORTED_VERSIONS)}',
        )
    return version


def _check_version_allows(version: str, command: str) -> None:
    """Refuse a command newer than the config's version (CHECK from 0.4.0, STATUS and GC 1.1.0)."""
    minimum = _MIN_CONFIG_VERSION[command]
    if not at_least(version, minimum):
        raise IncompatibleVersion(
            f"config version {version} does not allow {command}; it needs cniVersion {minimum} or newer"
        )


def _validate_identifiers(env: Mapping[str, str]) -> None:
    """Reject container IDs and interface names the spec (and the kernel) would not accept."""
    container_id = env["CNI_CONTAINERID"]
    if not _is_identifier(container_id):
        raise InvalidEnvironment(
            f"CNI_CONTAINERID {container_id!r} has invalid characters; "
            "use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    ifname = env["CNI_IFNAME"]
    if (
        len(ifname.encode("utf-8", "surrogateescape")) > _MAX_IFNAME_BYTES
        or ifname in (".", "..")
        or any(char in "/:" or char.isspace() or not char.isprintable() for char in ifname)
    ):
        raise InvalidEnvironment(
            f"CNI_IFNAME {ifname!r} is not a valid interface name; use at most "
            f"{_MAX_IFNAME_BYTES} bytes without '/', ':', spaces or control characters, e.g. eth0"
        )


def _is_identifier(text: str) -> bool:
    return bool(text) and text[0].isascii() and text[0].isalnum() and set(text) <= _ID_CHARS


def _error_json(err: CniError, cni_version: str) -> str:
    import json

    error: dict[str, Any] = {"cniVersion": cni_version, "code": err.code, "msg": err.msg}
    if err.details:
        error["details"] = err.details
    return json.dumps(error, indent=4) + "\n"
