# protoc from Debian's protobuf-compiler: cairn-cluster generates its gRPC
# code (proto/cluster.proto) with it at build time. Sourced by .ci/run
# before the lints and by .ci/test.
if ! command -v protoc >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq protobuf-compiler >/dev/null
fi
