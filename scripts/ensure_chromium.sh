#!/usr/bin/env bash
# Make Debian's headless-capable Chromium available for the service page test (tests/service/test_page.py,
# driven by Python playwright with executable_path=/usr/bin/chromium; `playwright install` is never run).
# Installs the `chromium` package with apt-get when /usr/bin/chromium is missing. Exits non-zero with a
# reason when it cannot; the page test then skips saying why.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "ensure_chromium: found $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)" >&2
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: /usr/bin/chromium is missing and apt-get cannot run here (not root or not Debian)." >&2
  echo "ensure_chromium: install Debian's 'chromium' package (sudo apt-get install chromium) and re-run." >&2
  exit 2
fi
echo "ensure_chromium: installing Debian's chromium package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y chromium >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y chromium >/dev/null; }
[ -x /usr/bin/chromium ] || { echo "ensure_chromium: apt-get did not install /usr/bin/chromium" >&2; exit 2; }
