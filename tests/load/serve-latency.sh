#!/usr/bin/env bash
# Latency of `provision serve` with many orders: the Provisioning Review page (a signed-in
# reviewer) and GET /api/v1/orders (a bearer token), measured with wrk against loopback.
#
#   tests/load/serve-latency.sh [IDENTITIES] [SECONDS]
#
# Builds the release binary, writes the quickstart deployment with IDENTITIES people (default
# 90 000: each has a SaaS account; one in eighteen also a sensitive finance membership, which
# waits for review, and another a badge, which waits for the help desk: 100 000 orders), runs the
# complete job, then loads each URL for SECONDS (default 10) with one connection, then with eight.
# Needs `wrk` (Debian: apt-get install wrk) and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
people=${1:-90000}
seconds=${2:-10}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

cargo build --release --locked -p provision
bin=${CARGO_TARGET_DIR:-target}/release/provision
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
# The file connector replays its whole journal on every call (time and memory grow with it), so
# the setup gives it large batches, large read pages and room to fill the database in reasonable
# time.
sed -e 's/^batch_size = 100$/batch_size = 5000/' -e 's/^timeout = "2s"$/timeout = "120s"/' \
  -e 's/^memory = "32 MiB"$/memory = "1 GiB"/' \
  -e 's|^dir = "/data"$|dir = "/data"\npage-size = "5000"|' examples/quickstart/provision.toml > "$work/provision.toml"
python3 - "$people" > "$work/data.toml" <<'PY'
import sys
n = int(sys.argv[1])
out = []
for i in range(n):
    key = "alice" if i == 0 else f"u{i}"
    out.append(f'[[identities]]\nentity_type = "Directory_User"\nkey = "{key}"\n')
    out.append(f'[[assignments]]\nidentity = "{key}"\nresource_type = "SaaS_Account"\n'
               f'attributes = {{ userName = "{key}", email = "{key}@example.com" }}\n')
    if i % 18 == 1:
        out.append(f'[[assignments]]\nidentity = "{key}"\nresource_type = "Finance_Group_Membership"\n')
    if i % 18 == 2:
        out.append(f'[[assignments]]\nidentity = "{key}"\nresource_type = "Badge_Access"\n')
print("\n".join(out))
PY
cd "$work"
"$bin" import data.toml >/dev/null
"$bin" job run --log-level warn
"$bin" orders list --json | python3 -c '
import collections, json, sys
orders = json.load(sys.stdin)
states = collections.Counter(o["state"]["name"] for o in orders)
print(f"orders in the database: {len(orders)}:", ", ".join(f"{n} {s}" for s, n in sorted(states.items())))'


port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --log-level warn >/dev/null &
server=$!
until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null; do
  kill -0 $server 2>/dev/null || { echo "provision serve exited" >&2; exit 1; }
  sleep 0.1
done
rita=$("$bin" tokens create --user rita)
root=$("$bin" tokens create --user root)
cookie=$(curl -s -o /dev/null -D - --data-urlencode "token=$rita" "http://127.0.0.1:$port/login" \
  | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')
curl -fs -H "Cookie: $cookie" "http://127.0.0.1:$port/review" | grep -q 'awaiting approval' \
  || { echo "the review page did not render for rita" >&2; exit 1; }

measure() { # name, url, header: one client at a time, then 8 at once
  echo "== $1"
  for clients in 1 8; do
    wrk -t"$(( clients < 2 ? 1 : 2 ))" -c"$clients" -d"${seconds}s" --latency -H "$3" "$2" \
      | awk -v c="$clients" '/Latency Distribution/ {p=1} p && /(50|99)%/ {l = l " p" $1 " " $2}
          /Requests\/sec/ {r = $2} /Non-2xx/ {e = " " $0} END {printf "  %d client(s):%s, %s requests/s%s\n", c, l, r, e}'
  done
}
measure "review page (GET /review, 100 orders per entity type per page)" "http://127.0.0.1:$port/review" "Cookie: $cookie"
measure "orders API (GET /api/v1/orders, first page of 100)" "http://127.0.0.1:$port/api/v1/orders" "Authorization: Bearer $root"
measure "orders API, filtered (GET /api/v1/orders?state=awaiting-approval&limit=100)" \
  "http://127.0.0.1:$port/api/v1/orders?state=awaiting-approval&limit=100" "Authorization: Bearer $root"
measure "orders API, deep page (GET /api/v1/orders?after=90000)" \
  "http://127.0.0.1:$port/api/v1/orders?after=90000" "Authorization: Bearer $root"
