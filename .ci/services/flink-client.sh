# Flink 2.3's REST client (flink-clients and what it needs, from Maven Central)
# and Java 17, for the Flink compatibility test
# (crates/cairn-cli/tests/flink_compat.rs). Sourced by .ci/test; exports
# CAIRN_FLINK_CLASSPATH and makes its absence a failure.
need=()
for p in openjdk-17-jdk-headless maven; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
mvn -q -B -Dmaven.repo.local="$CAIRN_CI_CACHE/m2" -f crates/cairn-cli/tests/flink/pom.xml \
    dependency:build-classpath -Dmdep.outputFile="$CAIRN_CI_CACHE/flink-classpath.txt"
export CAIRN_FLINK_CLASSPATH="$CAIRN_CI_CACHE/flink-classpath.txt"
export CAIRN_REQUIRE_FLINK_CLIENT=1
