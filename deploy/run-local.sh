#!/usr/bin/env bash
# Runs the three services as local processes in the foreground (`make run`),
# with the emulator as the identity provider unless .env points at a real
# Wristband application. Start order: emulator (waits for /healthz), then
# protected-data (waits for /readyz: keys loaded), then the gateway (waits
# for /readyz: token held); one line says when the system is ready to curl.
#
# Ctrl-C stops all three and exits 0 without a word. A service that exits on
# its own (a crash, a port in use) stops the others and exits 1, naming it.
#
# The emulator's signing key lives in .run/ (git-ignored), created on the
# first run and reused after, so a restart keeps the kid and tokens the
# gateway holds stay valid.
set -euo pipefail
cd "$(dirname "$0")/.."

# Why a process group of our own: Ctrl-C sends SIGINT to the terminal's
# foreground process group, which includes make. GNU make, on SIGINT, waits
# for its recipe and then kills itself with SIGINT, so `make run` would
# always end "interrupted" (status 130) however cleanly the services stop.
# With job control (set -m) the runner below becomes a foreground job in a
# group of its own that holds the terminal: Ctrl-C reaches the runner and the
# services only, the runner exits 0, and so does make. Without a terminal
# (CI, scripts, `timeout`) the runner runs inline.
in_terminal_foreground() {
  [ -t 0 ] || return 1
  local stat rest
  stat=$(cat /proc/$$/stat 2>/dev/null) || return 1
  rest=${stat##*) }              # fields from 3 on; comm may contain spaces
  read -r _ _ pgrp _ _ tpgid _ <<<"$rest"
  [ "$pgrp" = "$tpgid" ]
}
if [ -z "${RUN_LOCAL_RUNNER:-}" ] && in_terminal_foreground; then
  set -m
  # RUN_LOCAL_PARENT lets the runner notice if this shell dies (make sends
  # SIGTERM to its child, not to the runner's group).
  rc=0
  RUN_LOCAL_RUNNER=1 RUN_LOCAL_PARENT=$$ "$0" "$@" || rc=$?
  exit "$rc"
fi

if [ -f .env ]; then
  set -a; . ./.env; set +a
  echo "run: loaded .env"
fi

export LOG_FORMAT="${LOG_FORMAT:-text}"
EMU_ADDR="${EMULATOR_ADDR:-127.0.0.1:6003}"
EMU_URL="http://$EMU_ADDR"
PD_ADDR="${PROTECTED_DATA_ADDR:-127.0.0.1:6002}"
GW_ADDR="${GATEWAY_ADDR:-127.0.0.1:6001}"
START_TIMEOUT=${RUN_START_TIMEOUT:-30}
RUN_DIR=.run

names=()   # names[i] belongs to pids[i]
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

name_of() {
  local i
  for i in "${!pids[@]}"; do
    if [ "${pids[$i]}" = "$1" ]; then echo "${names[$i]}"; return; fi
  done
  echo "pid $1"
}

start() { # name command... (LISTEN_ADDR in its environment)
  local name=$1
  shift
  # Something else on the port would answer our readiness checks. (The
  # parent watch has no address: set -u would print "unbound variable".)
  if [ -n "${LISTEN_ADDR:-}" ] && { [ -n "$(http_status "$LISTEN_ADDR" /healthz)" ] || (exec 3<>"/dev/tcp/${LISTEN_ADDR%:*}/${LISTEN_ADDR##*:}") 2>/dev/null; }; then
    echo "run: $LISTEN_ADDR, $name's address, is already in use (another make run?); stopping" >&2
    exit 1
  fi
  "$@" &
  pids+=($!)
  names+=("$name")
}

# HTTP status of GET http://addr/path, with bash's /dev/tcp only (no curl
# needed). Prints nothing when nothing answers.
http_status() { # host:port path
  local host=${1%:*} port=${1##*:}
  [ -n "$host" ] || host=127.0.0.1
  (
    exec 3<>"/dev/tcp/$host/$port" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
    IFS=' ' read -r -t 3 _ code _ <&3 && echo "$code"
  ) 2>/dev/null || true
}

# Waits until GET addr/path answers 200, or the service dies, or time is up.
wait_ok() { # name pid host:port path
  local name=$1 pid=$2 addr=$3 path=$4 deadline=$((SECONDS + START_TIMEOUT))
  while [ "$(http_status "$addr" "$path")" != 200 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      local st=0
      wait "$pid" || st=$?
      echo "run: $name exited during start-up (status $st); stopping the others" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "run: $name not answering 200 on http://$addr$path after ${START_TIMEOUT}s; stopping the others" >&2
      exit 1
    fi
    sleep 0.1
  done
}

if [ -n "${RUN_LOCAL_PARENT:-}" ]; then
  # Ends (and so wakes `wait -n` below) when the shell that make started is
  # gone, e.g. after `kill <make>`: nothing outlives make.
  start parent-watch bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done' _ "$RUN_LOCAL_PARENT"
fi

# Every service gets its own admin (metrics) port on loopback, its own port
# + 3090 (6001 -> 9091, 6002 -> 9092, 6003 -> 9093): three on one host
# cannot all take the default :9090.
metrics_addr() { echo "127.0.0.1:$((${1##*:} + 3090))"; }
if [ -z "${APPLICATION_VANITY_DOMAIN:-}" ]; then
  echo "run: no APPLICATION_VANITY_DOMAIN: using the local wristband-emulator at $EMU_URL"
  mkdir -p "$RUN_DIR" && chmod 700 "$RUN_DIR"
  export CLIENT_ID="${CLIENT_ID:-demo-client}"
  # The emulator must know the gateway's secret, wherever it comes from (the
  # gateway refuses CLIENT_SECRET and CLIENT_SECRET_FILE together).
  if [ -n "${CLIENT_SECRET_FILE:-}" ]; then
    emu_secret=$(cat "$CLIENT_SECRET_FILE") || { echo "run: cannot read CLIENT_SECRET_FILE" >&2; exit 1; }
  else
    export CLIENT_SECRET="${CLIENT_SECRET:-demo-secret}"
    emu_secret=$CLIENT_SECRET
  fi
  LISTEN_ADDR=$EMU_ADDR ISSUER=$EMU_URL METRICS_ADDR="$(metrics_addr "$EMU_ADDR")" \
    SIGNING_KEY_FILE="${SIGNING_KEY_FILE:-$RUN_DIR/emulator-signing-key.pem}" \
    CLIENTS="$CLIENT_ID:$emu_secret" \
    start wristband-emulator ./bin/wristband-emulator
  export WRISTBAND_EMULATOR_URL=$EMU_URL
  wait_ok wristband-emulator "${pids[-1]}" "$EMU_ADDR" /healthz
fi

# Secure defaults (override in .env or the shell): only the gateway's own
# client, only access tokens, only machine-to-machine (client) subjects.
LISTEN_ADDR=$PD_ADDR METRICS_ADDR="$(metrics_addr "$PD_ADDR")" \
  ALLOWED_CLIENT_IDS="${ALLOWED_CLIENT_IDS-${CLIENT_ID:-}}" \
  REQUIRE_TOKEN_TYPE="${REQUIRE_TOKEN_TYPE-at+JWT}" \
  ALLOWED_SUB_KINDS="${ALLOWED_SUB_KINDS-client}" \
  start protected-data ./bin/protected-data
wait_ok protected-data "${pids[-1]}" "$PD_ADDR" /readyz

LISTEN_ADDR="$GW_ADDR" METRICS_ADDR="$(metrics_addr "$GW_ADDR")" PROTECTED_DATA_URL="http://$PD_ADDR" \
  start public-gateway ./bin/public-gateway
wait_ok public-gateway "${pids[-1]}" "$GW_ADDR" /readyz

# The services write their logs in batches (LOG_FLUSH_INTERVAL, 100ms by
# default): let the gateway's start-up lines out first, so that the ready
# line is the last one on the screen rather than buried under them.
sleep 0.2
echo "run: ready: curl -s http://$GW_ADDR/api/public/data   (Ctrl-C stops all three)"

# Any service exiting stops the others: a half-running system misleads.
st=0
wait -n -p gone "${pids[@]}" || st=$?
[ -n "$stopping" ] && exit 0
if [ "${gone:-}" ] && [ "$(name_of "$gone")" = parent-watch ]; then
  exit 0 # make is gone; the EXIT trap stops the services
fi
name=$(name_of "${gone:-}")
if [ "$st" = 0 ]; then
  # A clean exit of its own (e.g. `kill <pid>`, SIGTERM): not a crash, but
  # make run did not end as asked (Ctrl-C), so not a success either. A
  # Ctrl-C reaches every service, and a service can be done before our
  # trap has run (seen in CI under load). If every service is ending too,
  # it was that Ctrl-C: a quiet exit 0. One service stopping alone is not.
  for _ in {1..30}; do
    [ -n "$stopping" ] && exit 0
    # `jobs -rp`, not kill -0: an exited child stays a zombie until reaped.
    running=" $(jobs -rp | tr '\n' ' ') "
    alive=0
    for i in "${!pids[@]}"; do
      [ "${names[$i]}" = parent-watch ] && continue
      [[ "$running" == *" ${pids[$i]} "* ]] && alive=1
    done
    [ "$alive" = 0 ] && exit 0
    sleep 0.1
  done
  echo "run: $name stopped (exit 0) while the others ran; stopping them" >&2
  exit 1
fi
echo "run: $name exited (status $st); stopping the others" >&2
exit 1
