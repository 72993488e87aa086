#!/usr/bin/env bash
# Makes Debian's Chromium and its matching ChromeDriver available for the browser tests
# (tests/emulator/test_chat_page_browser.py). Idempotent: does nothing when both are installed.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi

echo "==> installing Debian's chromium and chromium-driver for the browser tests"
SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends chromium chromium-driver
