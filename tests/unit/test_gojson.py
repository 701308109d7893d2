"""Go's JSON spelling of strings, as flanneld marshals a PreStartupCommand's output."""

from __future__ import annotations

import json

import pytest

from overlayd.base.gojson import go_json, go_string, go_trimmed_output


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"plain", '"plain"'),
        (b'  <a href="x">&</a>\n', '"\\u003ca href=\\"x\\"\\u003e\\u0026\\u003c/a\\u003e"'),
        (b"tab\there\r\nnext \\ end", '"tab\\there\\r\\nnext \\\\ end"'),
        (b"bell\x07 bs\x08 ff\x0c esc\x1b del\x7f", '"bell\\u0007 bs\\u0008 ff\\u000c esc\\u001b del\x7f"'),
        ("é \u2028 ✓ \u2029 x".encode(), '"é \\u2028 ✓ \\u2029 x"'),  # raw UTF-8, the separators escaped
        (b"bad \xff and \xe2\x82 cut", '"bad \\ufffd and \\ufffd\\ufffd cut"'),  # one per invalid byte
        (b"\xed\xa0\x80", '"\\ufffd\\ufffd\\ufffd"'),  # an encoded surrogate is not UTF-8 to Go
        (b"\x1c keep \x1c", '"\\u001c keep \\u001c"'),  # not space to Go's TrimSpace
        ("\u00a0\u3000 x \u0085".encode(), '"x"'),  # but these are
        (b"", '""'),
    ],
)
def test_output_is_marshalled_as_flanneld_does(raw: bytes, expected: str) -> None:
    text = go_string(go_trimmed_output(raw))
    assert text == expected
    assert json.loads(text) == json.loads(expected)  # and it is JSON any reader takes


def test_go_json_keeps_a_go_written_value_as_it_was() -> None:
    written = '{"a":["\\u003cb\\u003e",1,true,null],"é":"\\"q\\""}'
    assert go_json(json.loads(written)) == written
