# An S3-compatible server for object-storage tests: moto[server] from PyPI (it
# answers conditional puts correctly). Tests start it on a free loopback port
# through CAIRN_MOTO_SERVER and stop it when they end; CAIRN_REQUIRE_S3 makes
# its absence a failure.
python3 -m venv "$CAIRN_CI_CACHE/moto-venv"
"$CAIRN_CI_CACHE/moto-venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
export CAIRN_MOTO_SERVER="$CAIRN_CI_CACHE/moto-venv/bin/moto_server"
export CAIRN_REQUIRE_S3=1
