#!/usr/bin/env bash
# The slow-sink checkpoint benchmark of docs/benchmarks.md, Cairn and Flink 2.3 back to back
# in the same run, with the same job and the same configuration keys in each mode:
#   aligned             (defaults)
#   aligned+debloat     taskmanager.network.memory.buffer-debloat.enabled=true (target 1 s)
#   unaligned           execution.checkpointing.unaligned.enabled=true
#   aligned-timeout     unaligned with execution.checkpointing.aligned-checkpoint-timeout=1s
#   unaligned+debloat   both
# usage: [BENCH_MODES="mode ..."] benches/slow-sink-checkpoints.sh [SECONDS per run, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
cargo bench -p cairn --bench slow_sink_checkpoints --no-run >/dev/null 2>&1
modes=(
  "aligned|"
  "aligned+debloat|-D taskmanager.network.memory.buffer-debloat.enabled=true"
  "unaligned|-D execution.checkpointing.unaligned.enabled=true"
  "aligned-timeout|-D execution.checkpointing.unaligned.enabled=true -D execution.checkpointing.aligned-checkpoint-timeout=1s"
  "unaligned+debloat|-D execution.checkpointing.unaligned.enabled=true -D taskmanager.network.memory.buffer-debloat.enabled=true"
)
# BENCH_MODES="unaligned aligned" runs only those
if [ -n "${BENCH_MODES:-}" ]; then
  keep=()
  for m in "${modes[@]}"; do
    for want in $BENCH_MODES; do [ "${m%%|*}" = "$want" ] && keep+=("$m"); done
  done
  modes=("${keep[@]}")
fi
echo "# $(date -u +%FT%TZ) nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) seconds=$SECS"
for m in "${modes[@]}"; do
  name="${m%%|*}"; flags="${m#*|}"
  # shellcheck disable=SC2086
  cargo bench -q -p cairn --bench slow_sink_checkpoints -- "$name" "$SECS" $flags 2>/dev/null | grep '^engine='
  # shellcheck disable=SC2086
  benches/flink-slow-sink/run.sh "$name" "$SECS" $flags
done
