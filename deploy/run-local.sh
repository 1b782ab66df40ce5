#!/usr/bin/env bash
# Runs the three services as local processes in the foreground, with the
# emulator as the identity provider unless .env points at a real Wristband
# application. Ctrl-C (or SIGTERM to make) stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f .env ]; then
  set -a; . ./.env; set +a
  echo "run: loaded .env"
fi

export LOG_FORMAT="${LOG_FORMAT:-text}"
EMU_ADDR=127.0.0.1:6003
EMU_URL="http://$EMU_ADDR"

pids=()
stopping=
stop() {
  stopping=1
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

if [ -z "${APPLICATION_VANITY_DOMAIN:-}" ]; then
  echo "run: no APPLICATION_VANITY_DOMAIN: using the local wristband-emulator at $EMU_URL"
  LISTEN_ADDR=$EMU_ADDR METRICS_ADDR=127.0.0.1:9093 ISSUER=$EMU_URL \
    CLIENTS="${CLIENT_ID:-demo-client}:${CLIENT_SECRET:-demo-secret}" \
    ./bin/wristband-emulator &
  pids+=($!)
  export WRISTBAND_EMULATOR_URL=$EMU_URL
  export CLIENT_ID="${CLIENT_ID:-demo-client}" CLIENT_SECRET="${CLIENT_SECRET:-demo-secret}"
fi

LISTEN_ADDR=127.0.0.1:6002 METRICS_ADDR=127.0.0.1:9092 ./bin/protected-data &
pids+=($!)
LISTEN_ADDR="${GATEWAY_ADDR:-127.0.0.1:6001}" METRICS_ADDR=127.0.0.1:9091 PROTECTED_DATA_URL=http://127.0.0.1:6002 ./bin/public-gateway &
pids+=($!)

echo "run: try  curl -s localhost:6001/api/public/data"
echo "run: metrics on 127.0.0.1:9091 (gateway), :9092 (protected-data), :9093 (emulator), path /metrics"
# Any service exiting stops the others: a half-running system misleads.
wait -n || true
[ -n "$stopping" ] && exit 0
echo "run: a service exited; stopping the others" >&2
exit 1
