"""JSON text as Go's ``encoding/json`` writes it, for values flanneld marshals and peers compare.

Python's ``json.dumps`` differs from Go's ``json.Marshal`` in how strings are escaped: Go escapes
``<``, ``>`` and ``&`` (HTML safety), U+2028 and U+2029, writes other non-ASCII as raw UTF-8,
writes each byte that is not valid UTF-8 as ``\\ufffd``, and (in the Go that built flanneld
v0.20) spells control characters other than ``\\n``, ``\\r`` and ``\\t`` as ``\\u00XX``. A lease
value must match flanneld's byte for byte, so strings that reach one go through here.
"""

from __future__ import annotations

import json

# Go's strings.TrimSpace: the Unicode White_Space characters (unicode.IsSpace).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
    "\u2028\u2029\u202f\u205f\u3000"
_ESCAPES = {
    '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029",
}  # fmt: skip


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code < 0x20:
        return f"\\u{code:04x}"
    if 0xD800 <= code <= 0xDFFF:  # a byte that was not UTF-8 (surrogateescape), or a lone surrogate
        return "\\ufffd"
    return char


def go_string(text: str) -> str:
    """``text`` as a JSON string literal, as Go's ``json.Marshal`` writes it. Bytes that were not
    valid UTF-8 are expected as surrogate escapes (``bytes.decode("utf-8", "surrogateescape")``)."""
    return '"' + "".join(_escape(char) for char in text) + '"'


def go_trimmed_output(raw: bytes) -> str:
    """A command's output as flanneld keeps it: ``strings.TrimSpace`` of the bytes, as text whose
    invalid UTF-8 bytes are surrogate escapes (``go_string`` writes each as ``\\ufffd``)."""
    return raw.decode("utf-8", "surrogateescape").strip(GO_SPACE)


def go_json(value: object) -> str:
    """Compact JSON of a decoded JSON value with Go's string escaping (numbers, literals as Python)."""
    if isinstance(value, str):
        return go_string(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_string(str(k))}:{go_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(item) for item in value) + "]"
    return json.dumps(value)
