# Debian's RocksDB 7.8 and libclang for the RocksDB state backend (`rocksdb`
# features): the `rocksdb` crate links the system library and generates its
# bindings from the system headers (.cargo/config.toml), so RocksDB is never
# compiled from source. librocksdb-dev brings the compression -dev packages.
# Sourced by .ci/test (and by .ci/run before linting); skipped when installed.
cairn_rocksdb_packages="librocksdb-dev libclang-dev"
cairn_rocksdb_missing=""
for p in $cairn_rocksdb_packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        cairn_rocksdb_missing="$cairn_rocksdb_missing $p"
done
if [ -n "$cairn_rocksdb_missing" ]; then
    cairn_sudo=""
    [ "$(id -u)" -eq 0 ] || cairn_sudo=sudo
    $cairn_sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $cairn_sudo apt-get install -y -qq --no-install-recommends $cairn_rocksdb_missing
else
    echo "installed: $cairn_rocksdb_packages"
fi
# .cargo/config.toml names x86_64's library directory; on another
# architecture point the build at the one the package installed (a variable
# set here wins over the config's [env]).
cairn_rocksdb_lib="$(dpkg -L librocksdb-dev 2>/dev/null | grep '/librocksdb\.so$' | head -1)"
if [ -n "$cairn_rocksdb_lib" ]; then
    ROCKSDB_LIB_DIR="$(dirname "$cairn_rocksdb_lib")"
    export ROCKSDB_LIB_DIR
fi
