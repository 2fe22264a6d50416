# Sourced by scripts/test and .ci/run: make sure headless Chromium and its driver are present (the
# test suite loads the built book in them). Installs the Debian packages chromium and chromium-driver
# when missing, as root or through passwordless sudo; otherwise says what to run. Google Chrome with
# its chromedriver (as on GitHub's runners) does as well.
_hgrad_browser=""
for b in chromium chromium-browser google-chrome; do command -v "$b" >/dev/null 2>&1 && _hgrad_browser="$b" && break; done
_hgrad_driver="$(command -v chromedriver || true)"
[ -z "$_hgrad_driver" ] && [ -x "${CHROMEWEBDRIVER:-/nonexistent}/chromedriver" ] && _hgrad_driver="$CHROMEWEBDRIVER/chromedriver"
if [ -z "$_hgrad_browser" ] || [ -z "$_hgrad_driver" ]; then
  pkgs="chromium chromium-driver"
  if [ "$(id -u)" = 0 ]; then sudo_=""; elif sudo -n true 2>/dev/null; then sudo_="sudo -n"; else sudo_=none; fi
  if [ "$sudo_" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "the book tests need headless Chromium: install the packages $pkgs (Debian/Ubuntu:" \
         "sudo apt-get install $pkgs), or point PATH at chromium and chromedriver" >&2
    exit 1
  fi
  echo "installing $pkgs (Debian packages)"
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null \
    || { $sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null; }
fi
