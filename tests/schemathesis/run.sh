#!/usr/bin/env bash
# Schemathesis against the real server and its own generated OpenAPI documents:
# the public listener with a real client key, its secret key and an allowed Origin, the
# internal listener with the admin token. Fails on a 5xx, an undocumented status code,
# content type, header or body, or invalid data the server accepted.
# Usage: tests/schemathesis/run.sh [path/to/widget-auth]   (bounded: about 4 minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${1:-target/debug/widget-auth}
if [ "$#" -eq 0 ]; then
  cargo build --locked --quiet --bin widget-auth
fi
# Seconds of fuzzing per listener, and examples per operation.
budget=${SCHEMATHESIS_SECONDS:-90}
examples=${SCHEMATHESIS_EXAMPLES:-50}

data=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
public=127.0.0.1:$(free_port)
internal=127.0.0.1:$(free_port)
admin_token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
origin=http://127.0.0.1:3000

WIDGET_AUTH_DATA_DIR="$data/store" \
  WIDGET_AUTH_PUBLIC_ADDR=$public \
  WIDGET_AUTH_INTERNAL_ADDR=$internal \
  WIDGET_AUTH_ADMIN_TOKEN=$admin_token \
  RUST_LOG=warn \
  "$bin" >"$data/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -sf "http://$public/readyz" >/dev/null && curl -sf "http://$internal/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$internal/readyz" >/dev/null || { cat "$data/server.log"; exit 1; }

created=$(curl -sf -X POST "http://$internal/internal/v1/client-keys" \
  -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
  -d "{\"name\": \"schemathesis\", \"origins\": [\"$origin\"]}")
field() { python3 -c "import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$created" "$1"; }
export WA_CLIENT_KEY WA_KEY_ID
WA_CLIENT_KEY=$(field public_key)
WA_KEY_ID=$(field id)
secret_key=$(field secret_key)

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection
export PYTHONPATH="$PWD/tests/schemathesis${PYTHONPATH:+:$PYTHONPATH}"
export SCHEMATHESIS_HOOKS=hooks
run() {
  local name=$1 url=$2
  shift 2
  echo "schemathesis: $name listener"
  # From the temp dir: schemathesis and hypothesis keep their caches in the working dir.
  (cd "$data" && timeout $((budget + 60)) schemathesis run "$url" \
    --checks "$checks" --max-examples "$examples" --max-time "$budget" \
    --request-timeout 10 --seed 1 --no-color "$@")
}
status=0
# Public first: the internal run's random commands may disable the key or change its
# origins.
run public "http://$public/openapi.json" \
  -H "Origin: $origin" -H "Authorization: Bearer $secret_key" || status=1
# The hooks hand half the valid cases the real key: the run must have reached the code
# behind the checks (a guest session and a visitor token minted), not only refusals.
minted() {
  curl -sf "http://$internal/metrics" |
    awk -v kind="$1" '/^[^#]/ && index($0, "tokens_minted_total{kind=\"" kind "\"}") > 0 {print $2; found=1} END {if (!found) print "absent"}'
}
for kind in session visitor; do
  count=$(minted "$kind")
  echo "schemathesis: $kind tokens minted: $count"
  if [ "$count" = "absent" ]; then
    echo "warning: no tokens_minted_total metric for $kind; cannot tell whether the run reached a 200"
  elif [ "$count" -eq 0 ]; then
    echo "the public run minted no $kind token: it never got past the refusals"
    status=1
  fi
done
run internal "http://$internal/openapi.json" \
  -H "Authorization: Bearer $admin_token" || status=1
if grep -q 'panicked' "$data/server.log"; then
  echo "the server panicked:"
  grep -A5 'panicked' "$data/server.log"
  status=1
fi
exit "$status"
