# A real Apache Kafka broker for the Kafka connector's tests (KRaft, one node, Java 17,
# 127.0.0.1 on a free port; .ci/kafka/broker.sh), stopped when the tests end. Exports
# CAIRN_KAFKA_BOOTSTRAP; CAIRN_REQUIRE_KAFKA makes its absence a failure.
bash .ci/kafka/system-packages.sh
export CAIRN_KAFKA_CACHE="$CAIRN_CI_CACHE/kafka"
kafka_env="$(bash .ci/kafka/broker.sh start)"
# Only a broker this run started is stopped at its end.
trap 'bash .ci/kafka/broker.sh stop' EXIT
eval "$kafka_env"
export CAIRN_REQUIRE_KAFKA=1
