#!/usr/bin/env bash
# Set-up for the tests, once per machine (running it again is quick and changes nothing):
# the WebAssembly target the components are built for, and a Python virtual environment in
# tests/.venv with the real servers the end-to-end tests start (an SMTP server, aiosmtpd).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

rustup target add wasm32-wasip2

if [ ! -x "$here/.venv/bin/python" ]; then
    python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
