# pyarrow and DuckDB in a venv: canonical savepoints must be readable (and rewritable) without Cairn.
# Sourced by .ci/test; exports CAIRN_PYTHON and makes its absence a failure.
python3 -m venv "$CAIRN_CI_CACHE/pyarrow-venv"
"$CAIRN_CI_CACHE/pyarrow-venv/bin/pip" install --quiet --disable-pip-version-check pyarrow duckdb
export CAIRN_PYTHON="$CAIRN_CI_CACHE/pyarrow-venv/bin/python"
export CAIRN_REQUIRE_PYARROW=1
