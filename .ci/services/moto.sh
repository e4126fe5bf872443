# An S3-compatible server for object-storage tests: moto[server] from PyPI (it
# answers conditional puts correctly; pinned, as the launcher below wraps its
# server's entry points). Tests start it on a free loopback port
# through CAIRN_MOTO_SERVER and stop it when they end; CAIRN_REQUIRE_S3 makes
# its absence a failure.
python3 -m venv "$CAIRN_CI_CACHE/moto-venv"
"$CAIRN_CI_CACHE/moto-venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
# moto checks a conditional put's precondition and stores the object in two steps without a
# lock, and moto_server handles requests on threads: on a busy machine two concurrent
# put-if-absent requests could both win (seen in storage_conformance), where S3 decides
# atomically. This launcher runs moto_server unchanged except that requests which change
# objects (anything but GET and HEAD) are served one at a time.
cat >"$CAIRN_CI_CACHE/moto-server-atomic" <<PY
#!$CAIRN_CI_CACHE/moto-venv/bin/python
import threading
import moto.server as server

_writes = threading.Lock()
_run_simple = server.run_simple


def _run_with_atomic_writes(host, port, app, **kwargs):
    def application(environ, start_response):
        if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return app(environ, start_response)
        with _writes:
            return list(app(environ, start_response))

    return _run_simple(host, port, application, **kwargs)


server.run_simple = _run_with_atomic_writes
server.main()
PY
chmod +x "$CAIRN_CI_CACHE/moto-server-atomic"
export CAIRN_MOTO_SERVER="$CAIRN_CI_CACHE/moto-server-atomic"
export CAIRN_REQUIRE_S3=1
