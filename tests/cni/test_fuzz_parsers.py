"""Property tests: the shim's stdin and config parsers fail only with CNI errors (a code each)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cni_shim import jsonio
from cni_shim.errors import CniError
from cni_shim.main import _check_version_allows, _config_version, _parse_config
from cni_shim.netconf import parse_conf

FUZZ = settings(max_examples=200, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
configs = st.fixed_dictionaries(
    {"name": st.sampled_from(["net", "bad name", ""]) | json_values,
     "type": st.just("flannel") | json_values},
    optional={
        "cniVersion": st.sampled_from(["0.3.1", "1.0.0", "1.1.0", "9.9.9"]) | json_values,
        "delegate": st.dictionaries(st.sampled_from(["bridge", "name", "ipam"]), json_values) | json_values,
        "ipam": st.dictionaries(st.sampled_from(["type", "routes", "ranges"]), json_values) | json_values,
        "dataDir": st.sampled_from(["/var/lib/cni/flannel", "relative", "../x"]) | json_values,
        "subnetFile": json_values,
        "subnetFileTimeout": json_values,
    },
)  # fmt: skip


def parse_all(text: str) -> None:
    config = _parse_config(text)
    version = _config_version(config)
    _check_version_allows(version, "ADD")
    parse_conf(config, version)


@FUZZ
@given(st.text(max_size=300) | configs.map(json.dumps))
def test_stdin_parsers_raise_only_cni_errors(text: str) -> None:
    try:
        parse_all(text)
    except CniError as err:
        assert err.code in (1, 2, 4, 5, 6, 7)


@FUZZ
@given(json_values)
def test_jsonio_reads_and_writes_what_json_does(value: object) -> None:
    text = json.dumps(value)
    assert jsonio.dumps(value) == text
    assert jsonio.loads(f" \n{text}\t") == json.loads(text)


@FUZZ
@given(st.text(max_size=30) | json_values.map(lambda value: json.dumps(value)[:-1]))
def test_jsonio_rejects_what_json_rejects_with_jsons_error(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError as err:
        try:
            jsonio.loads(text)
        except ValueError as ours:
            assert str(ours) == str(err)
        else:
            raise AssertionError(f"jsonio accepted {text!r}")
    else:
        assert jsonio.loads(text) == expected or expected != expected  # NaN is not equal to itself
