"""``loads`` and ``dumps`` as in ``json``, without importing ``json`` on the success path.

``import json`` compiles regular expressions at import time and pulls in ``re`` and ``enum``:
~7 ms on every CNI call, as much as the interpreter's own start-up (docs/benchmarks.md). The
work is done by ``_json``, the C accelerator ``json`` itself uses, called the way ``json`` calls
it. Malformed input is parsed again by ``json`` so the error is exactly json's
(``JSONDecodeError``, a ``ValueError``): in CPython 3.11 ``_json`` can only build that error once
``json.decoder`` is loaded.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # another Python implementation: the standard module it is
    _json = None

_WHITESPACE = " \t\n\r"  # JSON's insignificant whitespace (RFC 8259)
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _DecoderSettings:
    """json.JSONDecoder's defaults, as the attributes _json.make_scanner reads."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


if _json is not None:
    _scan = _json.make_scanner(_DecoderSettings())
    _encode = _json.make_encoder(
        None, _not_serializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )


def loads(text: str) -> Any:
    """The value of the JSON document ``text``; ValueError (json's own) if it is not one."""
    if _json is not None:
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = _scan(text, start)
        except RecursionError:
            raise
        except Exception:  # StopIteration (no value) or a half-built error: let json say what is wrong
            pass
        else:
            if not text[end:].strip(_WHITESPACE):
                return value
    import json

    return json.loads(text)


def dumps(value: Any) -> str:
    """``value`` as compact one-line JSON, as ``json.dumps(value)`` writes it."""
    if _json is None:
        import json

        return json.dumps(value)
    return "".join(_encode(value, 0))
