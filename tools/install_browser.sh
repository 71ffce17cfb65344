#!/usr/bin/env bash
# Headless Chromium, its chromedriver and a CJK font from Debian, for the browser tests and the console bench
# (vln_ros/harness/browser.py: Selenium drives /usr/bin/chromium through /usr/bin/chromedriver; nothing is
# downloaded from Google). `make test` and `make bench` run this; `make demo` does not (the fetch is about 120 MB,
# 420 MB on disk: it took `make demo` on a fresh machine from 1.5 to 6 minutes when it was part of install.sh).
# A system step, not a venv one: no stamp, the three files are checked every run (milliseconds). apt-get only
# when one is missing, as root or through sudo -n; when that cannot be done, one line and exit 0: the browser
# tests then skip with the reason (CI=true makes them fail instead). VLN_ROS_BROWSER=none: not attempted.
# fonts-wqy-zenhei: Chinese instructions on the console's page (and in its screenshots) instead of boxes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '[install] %s\n' "$*"; }
BROWSER_DEBS=(chromium chromium-driver fonts-wqy-zenhei)
CJK_FONT=/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc
browser_missing() { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || [ ! -e $CJK_FONT ]; }
install_browser() {   # sets why= when it cannot
  local as_root=() apt_log=$root/build/apt-chromium.log
  command -v apt-get > /dev/null || { why="no apt-get on this machine"; return 1; }
  if [ "$(id -u)" != 0 ]; then
    { command -v sudo > /dev/null && sudo -n true 2> /dev/null; } \
      || { why="not root, and no password-less sudo"; return 1; }
    as_root=(sudo -n)
  fi
  mkdir -p "$root/build"
  log "installing ${BROWSER_DEBS[*]} with apt-get for the browser tests (about 120 MB to fetch, 420 MB on disk; once)"
  local apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300)
  # The package lists may be missing or stale (a fetch then fails): update them once and try again.
  { "${apt[@]}" install --no-install-recommends "${BROWSER_DEBS[@]}" \
    || { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "${BROWSER_DEBS[@]}"; }; } \
    > "$apt_log" 2>&1 \
    || { why="apt-get failed ($(grep '^E:' "$apt_log" | tail -n 1 || true); log: $apt_log)"; return 1; }
  ! browser_missing || { why="apt-get ran but /usr/bin/chromium, /usr/bin/chromedriver or $CJK_FONT is missing"; return 1; }
}
if [ "${VLN_ROS_BROWSER:-}" != none ] && browser_missing; then
  why=
  if install_browser; then
    log "installed: $(/usr/bin/chromium --version 2> /dev/null || echo chromium), /usr/bin/chromedriver"
  else
    log "could not install ${BROWSER_DEBS[*]}: $why; the browser tests will skip (fail when CI is set)"
  fi
fi
