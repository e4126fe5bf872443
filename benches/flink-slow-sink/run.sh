#!/usr/bin/env bash
# Flink 2.3.0 side of the slow-sink checkpoint benchmark (docs/benchmarks.md): compiles
# SlowSinkBench.java with javac against the jars of the apache-flink wheel (the peers'
# venv, ../shared/peers/README.md; created here if missing) and runs it in a MiniCluster.
# usage: benches/flink-slow-sink/run.sh MODE SECONDS [-D key=value ...]
# Prints one line: engine=flink-2.3.0 mode=... checkpoints=... e2e_ms_p50=... persisted_bytes_p50=...
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${PEERS_CACHE:-/tmp/cairn-peers-cache}"
VENV="$CACHE/venv"
PF="$VENV/lib/python3.11/site-packages/pyflink"
MODE="${1:?mode}"; SECONDS_RUN="${2:?seconds}"; shift 2
if [ ! -d "$PF/lib" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "apache-flink==2.3.0"
fi
CP="$PF/lib/*"
BUILD="$CACHE/build-slow-sink"
JAR="$BUILD/slowsink.jar"
if [ ! -f "$JAR" ] || [ "$HERE/src/SlowSinkBench.java" -nt "$JAR" ]; then
  mkdir -p "$BUILD/classes"
  javac -cp "$CP" -d "$BUILD/classes" "$HERE/src/SlowSinkBench.java"
  (cd "$BUILD" && jar cf slowsink.jar -C classes .)
fi
CKPT="$(mktemp -d "${TMPDIR:-/tmp}/flink-slow-sink-ckpt.XXXXXX")"
LOG="$CKPT.log"
JOPTS=(--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED --add-opens=java.base/java.time=ALL-UNNAMED)
set +e
java -Xms1g -Xmx1g "${JOPTS[@]}" -Dlog4j.configurationFile="file:$HERE/log4j2.properties" -Dlog.file="$LOG" \
  -cp "$JAR:$CP" SlowSinkBench --mode "$MODE" --seconds "$SECONDS_RUN" --ckpt-dir "$CKPT" "$@" > "$CKPT.out" 2>&1
RC=$?
set -e
if [ $RC -ne 0 ]; then tail -30 "$CKPT.out" >&2; rm -rf "$CKPT" "$CKPT.out"; exit $RC; fi
echo "$(grep '^engine=' "$CKPT.out") load1=$(cut -d' ' -f1 /proc/loadavg)"
rm -rf "$CKPT" "$CKPT.out" "$LOG"
