#!/usr/bin/env bash
# Nexmark, Cairn beside Flink 2.3 in one run: for each query, the Cairn job
# (crates/cairn-nexmark/benches/nexmark.rs) and then the Flink job
# (src/NexmarkBench.java, in an in-process MiniCluster, set up and compiled as
# ../shared/peers/flink/run.sh does), same events (the generator is ported
# line by line), same algorithm, parallelism 2, heap state, checkpoints every
# INTERVAL_MS (aligned, exactly once). Prints one line per run and, per query,
# the throughput ratio, the CPU ratio and whether the checksums agree.
#
#   benches/nexmark-flink/run.sh                       # all queries, N=10000000
#   N=2000000 QUERIES="q1 q5" ROUNDS=2 benches/nexmark-flink/run.sh
#
# CPU seconds and peak RSS come from /usr/bin/time around each process (the
# JVM's include its start-up and the MiniCluster's; events/s are over the job
# only, from submission to result, on both sides).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEERS="${PEERS_DIR:-$ROOT/../shared/peers}"
CACHE="${PEERS_CACHE:-/tmp/cairn-peers-cache}"
N="${N:-10000000}"; P="${P:-2}"; INTERVAL_MS="${INTERVAL_MS:-1000}"; ROUNDS="${ROUNDS:-1}"
RATE="${RATE:-10000}"
QUERIES="${QUERIES:-q0 q1 q2 q3 q4 q5 q6 q7 q8 q11 q12}"
VENV="$CACHE/venv"
PF="$VENV/lib/python3.11/site-packages/pyflink"

# ---- setup (idempotent), as ../shared/peers/flink/run.sh ----
if [ ! -d "$PF/lib" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "apache-flink==2.3.0"
fi
CP="$PF/lib/*"
CLASSES="$CACHE/build/nexmark-classes"
JAR="$CACHE/build/nexmarkbench.jar"
if [ ! -f "$JAR" ] || [ "$HERE/src/NexmarkBench.java" -nt "$JAR" ]; then
  rm -rf "$CLASSES" && mkdir -p "$CLASSES"
  javac -cp "$CP" -d "$CLASSES" "$HERE/src/NexmarkBench.java"
  (cd "$CACHE/build" && jar cf nexmarkbench.jar -C nexmark-classes .)
fi
(cd "$ROOT" && cargo build -q --release -p cairn-nexmark --bench nexmark)
BENCH="$(ls -t "$ROOT"/target/release/deps/nexmark-* | grep -v '\.d$' | head -1)"

JOPTS=(--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED --add-opens=java.base/java.time=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED)
HEAP="${FLINK_BENCH_HEAP:-4g}"
RUN="$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$CACHE/logs" "$CACHE/ckpt"
TIMES="$(mktemp)"
trap 'rm -f "$TIMES"' EXIT

field() { sed -n "s/.*[ ^]$1=\([^ ]*\).*/\1/p" <<<" $2"; }
timed() { /usr/bin/time -f "%U %S %M" -o "$TIMES" "$@"; }
cpu_of() { awk '{printf "%.2f", $1 + $2}' "$TIMES"; }
rss_of() { awk '{printf "%.0f", $3 / 1024}' "$TIMES"; }

echo "# $(date -u +%FT%TZ) nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) N=$N P=$P interval_ms=$INTERVAL_MS event_rate=$RATE rounds=$ROUNDS"
for round in $(seq "$ROUNDS"); do
  for q in $QUERIES; do
    DOPTS=()
    if [ "$INTERVAL_MS" -gt 0 ]; then
      DOPTS=(-D "execution.checkpointing.interval=${INTERVAL_MS}ms" -D "execution.checkpointing.dir=$CACHE/ckpt/cairn-nexmark-$RUN-$q")
    fi
    c="$(timed "$BENCH" "$q" "$N" "$P" --event-rate "$RATE" "${DOPTS[@]}")"
    c="$c cpu_total_s=$(cpu_of) rss_mb=$(rss_of) load1=$(cut -d' ' -f1 /proc/loadavg)"
    echo "$c"
    rm -rf "$CACHE/ckpt/cairn-nexmark-$RUN-$q"
    f="$(timed java -Xms"$HEAP" -Xmx"$HEAP" "${JOPTS[@]}" -Dlog.file="$CACHE/logs/nexmark-$RUN-$q.log" \
      -Dlog4j.configurationFile="file:$PEERS/flink/log4j2.properties" -cp "$JAR:$CP" NexmarkBench \
      --query "$q" --events "$N" --parallelism "$P" --event-rate "$RATE" --interval-ms "$INTERVAL_MS" \
      --ckpt-dir "$CACHE/ckpt/flink-nexmark-$RUN-$q" 2>>"$CACHE/logs/nexmark-$RUN.stderr" | grep '^engine=')" \
      || { echo "flink $q failed; see $CACHE/logs/nexmark-$RUN.stderr" >&2; continue; }
    f="$f cpu_total_s=$(cpu_of) rss_mb=$(rss_of) load1=$(cut -d' ' -f1 /proc/loadavg)"
    echo "$f"
    rm -rf "$CACHE/ckpt/flink-nexmark-$RUN-$q"
    ce="$(field events_per_s "$c")"; fe="$(field events_per_s "$f")"
    cc="$(field cpu_total_s "$c")"; fc="$(field cpu_total_s "$f")"
    same=no; [ "$(field checksum "$c")" = "$(field checksum "$f")" ] && same=yes
    awk -v q="$q" -v ce="$ce" -v fe="$fe" -v cc="$cc" -v fc="$fc" -v same="$same" -v n="$N" 'BEGIN {
      printf "ratio query=%s throughput_cairn_over_flink=%.2f events_per_cpu_s_cairn=%.0f events_per_cpu_s_flink=%.0f per_core_ratio=%.2f same_checksum=%s\n",
        q, ce / fe, n / cc, n / fc, fc / cc, same }'
  done
done
