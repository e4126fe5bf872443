#!/usr/bin/env bash
# Upgrade a Cairn job on Kubernetes by savepoint, as the Flink Kubernetes
# Operator's "savepoint" upgrade mode does: stop the job with a savepoint,
# roll the new image (workers first, then the coordinator), and start the
# coordinator from that savepoint. Also changes the parallelism (-p) the
# same way, which is how a job on Kubernetes is rescaled.
#
#   deploy/kubernetes/upgrade.sh --image registry.example.com/cairn/job:1.1.0
#   deploy/kubernetes/upgrade.sh --parallelism 8 --workers 8
#
# Options:
#   --image IMAGE          the new image (default: keep the current one)
#   --parallelism N        start at parallelism N (default: keep)
#   --workers N            scale the worker StatefulSet to N replicas
#   --savepoint-dir DIR    where the savepoint goes (default: the job's
#                          execution.checkpointing.savepoint-dir)
#   --drain                advance event time to the end before the savepoint
#   --namespace NS, --timeout SECONDS (default 600)
#
# What it runs: `cairn list` and `cairn stop` inside the coordinator's pod
# (over the job's trusted control socket), `kubectl set image`, `kubectl
# scale`, `kubectl patch` of the coordinator's first argument (the restore
# flag, see cairn-job.yaml; the second, the parallelism) and `kubectl rollout status`. If it stops after
# the savepoint, it prints the savepoint so the rollout can be finished by
# hand; the coordinator keeps its finished pod meanwhile
# (cairn.cluster.linger-after-end), so nothing starts from scratch.
set -euo pipefail

IMAGE="" PARALLELISM="" WORKERS="" SAVEPOINT_DIR="" DRAIN="" NAMESPACE="" TIMEOUT=600
COORDINATOR=deployment/cairn-coordinator
WORKER_SET=statefulset/cairn-worker
KUBECTL=${KUBECTL:-kubectl}

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --image) IMAGE=$2; shift 2 ;;
        --parallelism|-p) PARALLELISM=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --savepoint-dir) SAVEPOINT_DIR=$2; shift 2 ;;
        --drain) DRAIN=--drain; shift ;;
        --namespace|-n) NAMESPACE=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "upgrade.sh: unknown option '$1'" >&2; usage 2 >&2 ;;
    esac
done
if [ -z "$IMAGE$PARALLELISM$WORKERS" ]; then
    echo "upgrade.sh: nothing to change: give --image, --parallelism and/or --workers" >&2
    exit 2
fi
case "$PARALLELISM$WORKERS" in *[!0-9]*)
    echo "upgrade.sh: --parallelism and --workers take whole numbers" >&2; exit 2 ;;
esac
k() { if [ -n "$NAMESPACE" ]; then "$KUBECTL" -n "$NAMESPACE" "$@"; else "$KUBECTL" "$@"; fi; }
cairn() { k exec "$COORDINATOR" -c coordinator -- cairn "$@"; }

echo "== the running job"
# `cairn list`: "<start> : <job id> : <name> (RUNNING) <url>"
JOB=$(cairn list | awk -F' : ' '/\(RUNNING\)/ { print $2; exit }')
if [ -z "$JOB" ]; then
    echo "upgrade.sh: no running job in $COORDINATOR ('cairn list' shows none RUNNING); nothing was changed" >&2
    exit 1
fi
echo "job $JOB"

echo "== stop with a savepoint"
STOP=(stop "$JOB" --type canonical)
[ -n "$SAVEPOINT_DIR" ] && STOP+=(--savepoint-path "$SAVEPOINT_DIR")
[ -n "$DRAIN" ] && STOP+=("$DRAIN")
OUT=$(cairn "${STOP[@]}")
echo "$OUT"
SAVEPOINT=$(printf '%s\n' "$OUT" | sed -n 's/^Savepoint completed\. Path: //p' | tail -n 1)
if [ -z "$SAVEPOINT" ]; then
    echo "upgrade.sh: the stop did not report a savepoint; nothing else was changed" >&2
    exit 1
fi
finish_by_hand() {
    echo "upgrade.sh: stopped after the savepoint $SAVEPOINT was written. Finish by hand: set the" \
        "coordinator's first argument to --fromSavepoint=$SAVEPOINT and roll it out." >&2
}
trap finish_by_hand ERR

echo "== workers"
[ -n "$IMAGE" ] && k set image "$WORKER_SET" "worker=$IMAGE"
[ -n "$WORKERS" ] && k scale "$WORKER_SET" --replicas "$WORKERS"
k rollout status "$WORKER_SET" --timeout "${TIMEOUT}s"

echo "== coordinator, from $SAVEPOINT"
[ -n "$IMAGE" ] && k set image "$COORDINATOR" "coordinator=$IMAGE"
PATCH="[{\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/args/0\",\"value\":\"--fromSavepoint=$SAVEPOINT\"}]"
k patch "$COORDINATOR" --type json -p "$PATCH"
if [ -n "$PARALLELISM" ]; then
    PATCH="[{\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/args/1\",\"value\":\"-Dparallelism.default=$PARALLELISM\"}]"
    k patch "$COORDINATOR" --type json -p "$PATCH"
fi
k rollout status "$COORDINATOR" --timeout "${TIMEOUT}s"
trap - ERR

echo "== the restarted job"
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
    NEW=$(cairn list 2>/dev/null | awk -F' : ' '/\(RUNNING\)/ { print $2; exit }' || true)
    [ -n "$NEW" ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "upgrade.sh: the coordinator did not report a running job within ${TIMEOUT}s; see its log" \
            "(kubectl logs $COORDINATOR)" >&2
        exit 1
    fi
    sleep 2
done
echo "job $NEW runs, restored from $SAVEPOINT"
