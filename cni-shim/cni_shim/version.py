"""CNI spec versions: which we speak, and how they compare."""

from __future__ import annotations

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]

# The Debian reference plugins (containernetworking-plugins 1.1.1) stop at 1.0.0: a 1.1.0
# config sent to them fails with code 1, so the delegate is always called at most at 1.0.0.
DELEGATE_MAX_VERSION = "1.0.0"


def version_key(version: str) -> tuple[int, int, int]:
    """Return a comparable (major, minor, patch); raise ValueError for anything else."""
    parts = version.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError(f"{version!r} is not a MAJOR.MINOR.PATCH version")
    major, minor, patch = (int(part) for part in parts)
    return major, minor, patch


def at_least(version: str, minimum: str) -> bool:
    """Whether ``version`` is ``minimum`` or newer (both must be well-formed)."""
    return version_key(version) >= version_key(minimum)


def delegate_version(config_version: str) -> str:
    """The version to speak to the delegate: the config's, capped at what it supports."""
    return min(config_version, DELEGATE_MAX_VERSION, key=version_key)
