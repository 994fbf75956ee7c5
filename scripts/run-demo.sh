#!/usr/bin/env bash
# `make run`: demo upstreams and Envoy with the meshrules filter on localhost, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY=${ENVOY:-.venv/bin/envoy}
LOG_DIR=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

python3 tests/upstream.py --listen passthrough=18080 --listen v1=18081 --listen v2=18082 \
  >"$LOG_DIR/upstream.log" 2>&1 &
pids+=($!)
"$ENVOY" -c envoy/envoy.yaml --concurrency 2 --log-level warn >"$LOG_DIR/envoy.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
  curl -fs http://127.0.0.1:9901/ready >/dev/null 2>&1 && break
  if ! kill -0 "${pids[1]}" 2>/dev/null; then
    echo "Envoy did not start:"; cat "$LOG_DIR/envoy.log"; exit 1
  fi
  sleep 0.2
done
curl -fs http://127.0.0.1:9901/ready >/dev/null || { echo "Envoy is not ready:"; cat "$LOG_DIR/envoy.log"; exit 1; }

cat <<'MSG'
meshrules demo is up: Envoy on 127.0.0.1:10000 (admin :9901), upstreams v1 :18081, v2 :18082.
The rules are the VirtualService and AuthorizationPolicy in envoy/envoy.yaml. Try:

  # canary: the x-canary header goes to v2
  curl -s -H 'Host: demoapp' -H 'x-canary: true' localhost:10000/ -o /dev/null -w '%header{x-served-by}\n'

  # 90/10 split between v1 and v2
  for i in $(seq 50); do curl -s -H 'Host: demoapp' localhost:10000/ -o /dev/null -w '%header{x-served-by}\n'; done | sort | uniq -c

  # fault delay: 2 s
  curl -s -H 'Host: demoapp' localhost:10000/delay -o /dev/null -w '%{http_code} after %{time_total}s\n'

  # fault abort: 503 "fault filter abort"
  curl -si -H 'Host: demoapp' localhost:10000/abort

  # timeout: the upstream takes 3 s, the route allows 1 s -> 504
  curl -s -H 'Host: demoapp' -H 'x-upstream-delay-ms: 3000' localhost:10000/slow -o /dev/null -w '%{http_code} after %{time_total}s\n'

  # authorization: a DENY on /admin, also when spelled /a/../admin, //admin or /%61dmin -> 403 403 403 403
  for p in /admin /a/../admin //admin /%61dmin; do curl -s --path-as-is -H 'Host: demoapp' localhost:10000$p -o /dev/null -w '%{http_code} '; done; echo

  # ambiguous paths are refused: an encoded slash -> 400
  curl -s -H 'Host: demoapp' localhost:10000/admin%2Fusers -o /dev/null -w '%{http_code}\n'

  # the filter's metrics
  curl -s localhost:9901/stats/prometheus | grep meshrules

Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
