#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser tests (Playwright drives it;
# Playwright's own browser download is not used), with a Korean font so that screenshots of
# EXAONE's Korean answers show Hangul rather than boxes. Installs both with apt-get when missing
# and we are root; otherwise prints a note and exits 0, and the browser tests fail with the reason.
set -u
CHROMIUM=/usr/bin/chromium

works() { [ -x "$CHROMIUM" ] && "$CHROMIUM" --version >/dev/null 2>&1; }
has_korean_font() { command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=ko 2>/dev/null)" ]; }

if works && has_korean_font; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    works && exit 0  # only the font is missing: Hangul shows as boxes in screenshots, tests pass
    echo "note: $CHROMIUM is missing and this is not root on a Debian-like system; install" \
         "Chromium (apt-get install chromium) to run the browser tests, which fail without it."
    exit 0
fi
echo "Installing Chromium and a Korean font for the browser tests (apt-get install chromium fonts-nanum)..."
# Another apt-get may hold the lock for a while: wait for it rather than fail.
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null \
    && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        chromium fonts-nanum >/dev/null
if works; then
    echo "Chromium ready: $("$CHROMIUM" --version 2>/dev/null)"
else
    echo "note: installing Chromium failed; the browser tests will fail with the reason."
fi
exit 0
