#!/usr/bin/env bash
# Kafka -> keyed count -> Kafka, Cairn beside Flink 2.3 (its own Kafka connector), against
# one broker in one run. Prints one line per measurement; results go in docs/benchmarks.md.
#
#   benches/flink-kafka/run.sh            # N=2000000 K=10000 RATE=20000 SECS=30 GUARANTEES="at-least-once exactly-once"
#
# 1. throughput: the input topic (2 partitions) holds N events; each engine runs the job with a
#    bounded Kafka source from the earliest offsets to the end, parallelism 2, checkpoints
#    every 1 s; events/s = N / job time (start to end, job start-up included).
# 2. latency: each engine runs the job unbounded on an empty topic; the driver produces RATE
#    events/s for SECS seconds, each carrying its send time, and reads the job's output
#    (read_committed) as it arrives; end-to-end latency = receipt - send, percentiles.
#
# The broker is started here (.ci/kafka/broker.sh) unless CAIRN_KAFKA_BOOTSTRAP is set.
# Flink comes from PyPI's apache-flink 2.3.0 wheel (its jars, run with plain java), the
# connector (org.apache.flink:flink-connector-kafka 5.0.0-2.2) from Maven Central.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${PEERS_CACHE:-/tmp/cairn-peers-cache}"
N="${N:-2000000}"; K="${K:-10000}"; RATE="${RATE:-20000}"; SECS="${SECS:-30}"
GUARANTEES="${GUARANTEES:-at-least-once exactly-once}"
VENV="$CACHE/venv"
PF="$VENV/lib/python3.11/site-packages/pyflink"
LIBS="$CACHE/flink-kafka-libs"
KLIBS="${CAIRN_KAFKA_CACHE:-/tmp/cairn-kafka-cache}/libs-4.1.1"
# The peers folder (read-only) with Flink's logging configuration; beside the clone by default.
PEERS="${PEERS_DIR:-$ROOT/../shared/peers}"

# ---- setup (idempotent) ----
if [ ! -d "$PF/lib" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "apache-flink==2.3.0"
fi
if [ ! -f "$LIBS/.complete" ]; then
  mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$LIBS" -DincludeScope=runtime
  rm -f "$LIBS"/slf4j-api-*.jar   # Flink's own logging jars come with the wheel
  touch "$LIBS/.complete"
fi
CP="$PF/lib/*:$LIBS/*"
JAR="$CACHE/build/flinkkafkabench.jar"
if [ ! -f "$JAR" ] || [ "$HERE/src/FlinkKafkaBench.java" -nt "$JAR" ]; then
  rm -rf "$CACHE/build/fkb-classes" && mkdir -p "$CACHE/build/fkb-classes"
  javac -cp "$CP" -d "$CACHE/build/fkb-classes" "$HERE/src/FlinkKafkaBench.java"
  (cd "$CACHE/build" && jar cf flinkkafkabench.jar -C fkb-classes .)
fi
(cd "$ROOT" && cargo build -q --release -p cairn --features kafka --bench kafka_keyed_count)
BENCH="$(ls -t "$ROOT"/target/release/deps/kafka_keyed_count-* | grep -v '\.d$' | head -1)"

if [ -z "${CAIRN_KAFKA_BOOTSTRAP:-}" ]; then
  eval "$(bash "$ROOT/.ci/kafka/broker.sh" start)"
  trap 'bash "$ROOT/.ci/kafka/broker.sh" stop' EXIT
fi
B="$CAIRN_KAFKA_BOOTSTRAP"
topic() {
  java -Dlog4j2.configurationFile="file:$ROOT/.ci/kafka/log4j2.properties" -cp "$KLIBS/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$B" --create --topic "$1" --partitions 2 >/dev/null
}
JOPTS=(--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED)
flink() {
  java -Xms2g -Xmx2g "${JOPTS[@]}" -Dlog4j.configurationFile="file:$PEERS/flink/log4j2.properties" \
    -Dlog.file="$CACHE/logs/flink-kafka-$$.log" -cp "$JAR:$CP" FlinkKafkaBench "$@"
}
mkdir -p "$CACHE/logs" "$CACHE/ckpt"
RUN="$(date +%s)"
echo "# $(date -u +%FT%TZ) nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) N=$N K=$K RATE=$RATE SECS=$SECS broker=$B"

# ---- 1. throughput ----
IN="bench-in-$RUN"; topic "$IN"
"$BENCH" fill "$B" "$IN" "$N" "$K"
for g in $GUARANTEES; do
  OUT="bench-out-cairn-$g-$RUN"; topic "$OUT"
  echo "$("$BENCH" cairn "$B" "$IN" "$OUT" "$g" bounded "$CACHE/ckpt/cairn-$RUN-$g") N=$N load1=$(cut -d' ' -f1 /proc/loadavg)"
  OUT="bench-out-flink-$g-$RUN"; topic "$OUT"
  line="$(flink --bootstrap "$B" --input "$IN" --output "$OUT" --guarantee "$g" --bounded true --ckpt-dir "$CACHE/ckpt/flink-$RUN-$g" 2>/dev/null | grep '^engine=')"
  secs="$(echo "$line" | sed 's/.*seconds=//')"
  echo "$line events=$N events_per_s=$(python3 -c "print(round($N/$secs))") load1=$(cut -d' ' -f1 /proc/loadavg)"
done

# ---- 2. latency at a fixed rate (at-least-once sink: visibility does not wait for checkpoints) ----
for engine in cairn flink; do
  IN="lat-in-$engine-$RUN"; OUT="lat-out-$engine-$RUN"; topic "$IN"; topic "$OUT"
  if [ "$engine" = cairn ]; then
    "$BENCH" cairn "$B" "$IN" "$OUT" at-least-once unbounded "$CACHE/ckpt/cairn-lat-$RUN" >/dev/null 2>&1 &
  else
    flink --bootstrap "$B" --input "$IN" --output "$OUT" --guarantee at-least-once --bounded false \
      --ckpt-dir "$CACHE/ckpt/flink-lat-$RUN" >/dev/null 2>&1 &
  fi
  JOB=$!
  # Warm-up: the job must be reading before the measured records are sent.
  "$BENCH" latency "$B" "$IN" "$OUT" 1000 5 "$K" >/dev/null
  echo "engine=$engine $("$BENCH" latency "$B" "$IN" "$OUT" "$RATE" "$SECS" "$K") load1=$(cut -d' ' -f1 /proc/loadavg)"
  kill "$JOB" 2>/dev/null || true
  wait "$JOB" 2>/dev/null || true
done
rm -rf "$CACHE/ckpt/cairn-$RUN"* "$CACHE/ckpt/flink-$RUN"* "$CACHE/ckpt/cairn-lat-$RUN" "$CACHE/ckpt/flink-lat-$RUN"
