#!/usr/bin/env bash
# A real Apache Kafka broker for the Kafka connector's tests: KRaft, one node (broker and
# controller in one JVM), Java 17, listening on 127.0.0.1 only, on free ports.
#
#   .ci/kafka/broker.sh run CMD...   start a broker, run CMD with CAIRN_KAFKA_BOOTSTRAP set,
#                                    stop the broker (also when CMD fails); exits with CMD's status
#   .ci/kafka/broker.sh start        start one in the background; prints `export CAIRN_KAFKA_BOOTSTRAP=...`
#   .ci/kafka/broker.sh stop         stop the one `start` started
#
# The broker's jars come from Maven Central (`.ci/kafka/pom.xml`, copied once into
# $CAIRN_KAFKA_CACHE, default /tmp/cairn-kafka-cache). Each start formats a fresh storage
# directory under $CAIRN_KAFKA_CACHE/run-<checkout>. Topics are never created automatically (the
# tests check the unknown-topic error), and topics named `cairn-forbidden*` are denied to
# every client by an ACL (the tests check the missing-permission error).
# Time retention is off (log.retention.ms=-1): test records carry event times from 1970 or
# 2023, and the broker's first retention check (30 s after start) would otherwise delete the
# segments holding them between a job's commit and the test's read.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
KAFKA_VERSION=4.1.1
CACHE="${CAIRN_KAFKA_CACHE:-/tmp/cairn-kafka-cache}"
LIBS="$CACHE/libs-$KAFKA_VERSION"
# One run directory per checkout: CI runs of several checkouts on one machine share the
# cache (the jars) but never each other's broker.
RUN="$CACHE/run-$(printf '%s' "$HERE" | cksum | cut -d' ' -f1)"
PIDFILE="$RUN/broker.pid"

log() { echo "[kafka-broker] $*" >&2; }

fetch() {
    if [ -f "$LIBS/.complete" ]; then return; fi
    log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS"
    command -v mvn >/dev/null || { log "mvn is missing (apt-get install maven)"; exit 2; }
    command -v java >/dev/null || { log "java is missing (apt-get install openjdk-17-jre-headless)"; exit 2; }
    rm -rf "$LIBS"
    # Maven writes to stderr here: `start` prints only the export line on stdout.
    mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$LIBS" -DincludeScope=runtime >&2
    touch "$LIBS/.complete"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

java_cp() { java -Xms256m -Xmx768m -cp "$LIBS/*" -Dlog4j2.configurationFile="file:$HERE/log4j2.properties" "$@"; }

start() {
    fetch
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        log "a broker started by this script is still running (pid $(cat "$PIDFILE")); run '$0 stop' first"
        exit 2
    fi
    rm -rf "$RUN"
    mkdir -p "$RUN/data"
    local port cport
    port=$(free_port)
    cport=$(free_port)
    while [ "$cport" = "$port" ]; do cport=$(free_port); done
    cat >"$RUN/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$RUN/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
log.retention.ms=-1
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
EOF
    local cluster_id
    cluster_id=$(java_cp kafka.tools.StorageTool random-uuid)
    java_cp kafka.tools.StorageTool format -t "$cluster_id" -c "$RUN/server.properties" >"$RUN/format.log" 2>&1 \
        || { cat "$RUN/format.log" >&2; log "formatting the storage directory failed"; exit 1; }
    log "starting the broker on 127.0.0.1:$port (controller :$cport), log $RUN/broker.log"
    # setsid: the broker gets a process group of its own, so `stop` ends it and nothing else.
    setsid java -Xms512m -Xmx1g -XX:+UseG1GC -cp "$LIBS/*" \
        -Dlog4j2.configurationFile="file:$HERE/log4j2.properties" -Dkafka.logs.dir="$RUN" \
        kafka.Kafka "$RUN/server.properties" >"$RUN/broker.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    echo "127.0.0.1:$port" >"$RUN/bootstrap"
    # Ready when the broker answers a metadata request (a client round trip, not only a port).
    local deadline=$((SECONDS + ${CAIRN_KAFKA_START_TIMEOUT:-120}))
    until java_cp org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --list \
        >"$RUN/ready.log" 2>&1; do
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            tail -40 "$RUN/broker.log" >&2
            log "the broker exited during start-up"
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -40 "$RUN/broker.log" >&2
            log "the broker did not answer within ${CAIRN_KAFKA_START_TIMEOUT:-120} s"
            stop
            exit 1
        fi
        sleep 1
    done
    java_cp org.apache.kafka.tools.AclCommand --bootstrap-server "127.0.0.1:$port" --add \
        --deny-principal User:ANONYMOUS --operation All --topic cairn-forbidden \
        --resource-pattern-type prefixed >"$RUN/acl.log" 2>&1 \
        || { cat "$RUN/acl.log" >&2; log "creating the deny ACL failed"; stop; exit 1; }
    # The test topics that must exist but be unreadable.
    java_cp org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --create \
        --topic cairn-forbidden --partitions 1 >>"$RUN/acl.log" 2>&1 || true
    log "ready: CAIRN_KAFKA_BOOTSTRAP=127.0.0.1:$port"
    echo "export CAIRN_KAFKA_BOOTSTRAP=127.0.0.1:$port"
}

stop() {
    if [ ! -f "$PIDFILE" ]; then return 0; fi
    local pid
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping the broker (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "the broker did not stop in 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
    fetch) fetch ;;
    start) start ;;
    stop) stop ;;
    run)
        shift
        [ $# -gt 0 ] || { log "usage: $0 run CMD..."; exit 2; }
        eval "$(start)"
        trap stop EXIT
        set +e
        "$@"
        status=$?
        set -e
        exit $status
        ;;
    *)
        echo "usage: $0 {start|stop|fetch|run CMD...}" >&2
        exit 2
        ;;
esac
