"""CNI errors as typed exceptions; the spec's numeric code lives on the class.

Modules raise the class that describes *what* went wrong; only ``main`` turns an error into
the JSON the runtime reads, so the codes are assigned in one place.
"""

from __future__ import annotations


class CniError(Exception):
    """A failure the runtime sees as ``{"code", "msg", "details"}``.

    The base class carries 999, the code the reference plugins use for runtime failures that
    the spec has no number for.
    """

    code = 999

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


class IncompatibleVersion(CniError):
    code = 1


class UnsupportedField(CniError):
    code = 2


class InvalidEnvironment(CniError):
    code = 4


class IOFailure(CniError):
    code = 5


class DecodeFailure(CniError):
    code = 6


class InvalidConfig(CniError):
    code = 7


class TryAgainLater(CniError):
    code = 11


class CannotServiceAdd(CniError):
    """STATUS: new containers cannot be attached (the agent has no subnet yet)."""

    code = 50


class ExistingMayBeAffected(CniError):
    """STATUS: even DEL of existing containers would fail (delegate plugins missing)."""

    code = 51


class DelegateFailed(CniError):
    """A delegated plugin reported an error; its own code is passed on unchanged."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg, details)
        self.code = code
