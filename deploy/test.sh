#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, as root: installs what it needs, lints, tests.
# Extra arguments go to pytest (e.g. `bash deploy/test.sh tests/unit -k lease`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
