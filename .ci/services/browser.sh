# Debian's Chromium and chromium-driver with Selenium in a venv, for the web
# UI test (crates/cairn-cli/tests/ui_browser.rs). Sourced by .ci/test;
# exports CAIRN_SELENIUM_PYTHON and makes its absence a failure.
need=()
for p in chromium chromium-driver python3-venv; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -m venv "$CAIRN_CI_CACHE/selenium-venv"
"$CAIRN_CI_CACHE/selenium-venv/bin/pip" install --quiet --disable-pip-version-check 'selenium==4.51.0'
export CAIRN_SELENIUM_PYTHON="$CAIRN_CI_CACHE/selenium-venv/bin/python"
export CAIRN_REQUIRE_BROWSER=1
