#!/usr/bin/env bash
# Run edgeseg's checks on a fresh machine: create .venv (reused when present), install
# edgeseg with every extra and the dev tools, lint, then run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k tiling`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[all,dev]"
# Keras 2 (tf-keras) only writes real legacy .h5 files for the loading tests. It declares a
# dependency on the full `tensorflow` distribution, so it goes in without dependencies and
# at the minor version of the TensorFlow installed.
TF_MINOR=$(.venv/bin/python -c "import tensorflow as tf; print('.'.join(tf.__version__.split('.')[:2]))" 2>/dev/null)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "tf-keras~=${TF_MINOR}.0"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
