#!/usr/bin/env bash
# Debian packages the Kafka connector and its test broker need: cmake, a C/C++ compiler and
# make build the bundled librdkafka (rdkafka's `cmake-build`), whose 2.12 sources include
# <curl/curl.h> even when built without curl (librdkafka issue 5135: headers only, nothing
# links libcurl); Maven fetches the broker, Java 17 runs it, python3 finds free ports.
# Installs only what is missing.
set -euo pipefail
need=()
for pkg in cmake g++ make libcurl4-openssl-dev maven openjdk-17-jre-headless python3; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
