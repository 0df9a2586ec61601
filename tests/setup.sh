#!/usr/bin/env bash
# Set-up for the tests, once per machine (running it again is quick and changes nothing):
# the WebAssembly target the components are built for, and a Python virtual environment in
# tests/.venv with the real servers the end-to-end tests start (an SMTP server, a SCIM server),
# and Debian's Chromium with its WebDriver for the browser tests of the web pages.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

rustup target add wasm32-wasip2

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >/dev/null
fi

if [ ! -x "$here/.venv/bin/python" ]; then
    python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
