# Network namespaces for the multi-host tests (crates/cairn/tests/cluster_netns.rs):
# iproute2 from Debian; the tests make and remove their own namespaces,
# veth pairs and bridge, and send nothing off the machine. They need root:
# as root, CAIRN_REQUIRE_NETNS=1 makes a skip a failure.
if ! command -v ip >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iproute2 >/dev/null
fi
if [ "$(id -u)" -eq 0 ]; then
    export CAIRN_REQUIRE_NETNS=1
else
    echo "WARNING: not root: the multi-host (network namespace) tests will be skipped"
fi
