#!/usr/bin/env bash
# Set-up for the tests, once per machine (running it again is quick and changes nothing):
# the WebAssembly target the components are built for, and a Python virtual environment in
# tests/.venv with the real servers the end-to-end tests start (an SMTP server, a SCIM server),
# Debian's Chromium with its WebDriver for the browser tests of the web pages, and Debian's
# PostgreSQL server binaries (the tests start their own server with them; none is left running).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

rustup target add wasm32-wasip2

packages=()
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    packages+=(chromium chromium-driver fonts-liberation)
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    packages+=(postgresql)
fi
if [ ${#packages[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

if [ ! -x "$here/.venv/bin/python" ]; then
    python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
