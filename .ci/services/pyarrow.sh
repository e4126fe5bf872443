# pyarrow and DuckDB from PyPI in a venv: canonical savepoints must be readable (and
# rewritable) without Cairn (crates/cairn-state-processor/tests/external_tools.rs,
# crates/cairn-snapshot/tests/parquet_pyarrow.rs). Sourced by .ci/test; needs nothing but
# python3 (python3-venv comes from Debian when missing); exports CAIRN_PYTHON and makes the
# absence of either library a failure.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
python3 -m venv "$CAIRN_CI_CACHE/pyarrow-venv"
"$CAIRN_CI_CACHE/pyarrow-venv/bin/pip" install --quiet --disable-pip-version-check pyarrow duckdb
"$CAIRN_CI_CACHE/pyarrow-venv/bin/python" -c 'import pyarrow, duckdb; print("pyarrow", pyarrow.__version__, "duckdb", duckdb.__version__)'
export CAIRN_PYTHON="$CAIRN_CI_CACHE/pyarrow-venv/bin/python"
export CAIRN_REQUIRE_PYARROW=1
