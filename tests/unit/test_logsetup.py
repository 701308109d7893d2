"""--log-format json writes one parseable object per line; -v/-vv come from every option source."""

import argparse
import io
import json
import logging
import sys

import pytest

from overlayd.logsetup import configure_logging
from overlayd.option_sources import build_parser, normalize_argv
from overlayd.options import OptionsError, resolve_options


def test_json_lines_carry_ts_level_logger_msg(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("info", "json", verbose=1)
    logging.getLogger("overlayd.test").debug("lease %s renewed", "198.18.7.0-24")
    logging.getLogger("pyroute2").debug("library noise")
    entry = json.loads(stream.getvalue().splitlines()[0])
    assert entry["level"] == "debug" and entry["logger"] == "overlayd.test"
    assert entry["msg"] == "lease 198.18.7.0-24 renewed" and entry["ts"].endswith("+00:00")
    assert len(stream.getvalue().splitlines()) == 1, "-v must not turn on library debug logs"
    configure_logging("info")
    logging.getLogger("overlayd").setLevel(logging.NOTSET)


def test_verbosity_and_format_from_each_source() -> None:
    parser = build_parser(argparse.ArgumentParser())
    assert resolve_options(parser.parse_args(normalize_argv(["-vv"])), {}).verbose == 2
    options = resolve_options(parser.parse_args([]), {"OVERLAYD_VERBOSE": "1", "FLANNELD_LOG_FORMAT": "JSON"})
    assert (options.verbose, options.log_format) == (1, "json")
    with pytest.raises(OptionsError, match=r"--log-format from environment variable OVERLAYD_LOG_FORMAT"):
        resolve_options(parser.parse_args([]), {"OVERLAYD_LOG_FORMAT": "xml"})
