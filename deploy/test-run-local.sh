#!/usr/bin/env bash
# Tests `make run` as a person uses it: under a terminal (script(1) gives it
# a pseudo-terminal, so Ctrl-C is a real ^C through the line discipline to
# the foreground process group, make included).
#   1. the ready line comes, the public call answers 200;
#   2. ^C: make exits 0, nothing on the screen says "exited" or "make: ***",
#      and no service is left running;
#   3. the emulator's kid is the same on the next start (key kept in .run/);
#   4. kill -9 of protected-data: the others stop, make exits non-zero, and
#      the runner names protected-data;
#   5. kill (SIGTERM) of the emulator: the same (it exits 0, but make run
#      did not end as asked).
# Runs on free ports of its own so that it does not meet a `make run` of
# the developer's. Bounded: every wait has a deadline.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
# Three free ports (and their +3090 metrics ports) in 20000-28999: below
# Linux's ephemeral range (32768+), where a port that nothing listens on
# can still be the source port of some connection and so refuse a bind
# (seen in CI with the container tests running alongside).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 9000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 3090))") 2>/dev/null &&
      [[ " ${used:-} " != *" $p "* ]]; then
      used="${used:-} $p"
      echo "$p"
      return
    fi
  done
}
used=
gp=$(free_port); used="$used $gp"; pp=$(free_port); used="$used $pp"; ep=$(free_port)
export GATEWAY_ADDR=127.0.0.1:$gp PROTECTED_DATA_ADDR=127.0.0.1:$pp EMULATOR_ADDR=127.0.0.1:$ep
export LOG_FORMAT=text
fails=0
spid=
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null
  exec 3>&- 2>/dev/null || true
  [ -n "${KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "test-run-local: FAIL: $*"; fails=$((fails + 1)); }

# Starts `make run` under a pseudo-terminal; its keyboard is fd 3.
start_run() { # name
  out=$tmp/$1.out
  rm -f "$tmp/in"
  mkfifo "$tmp/in"
  # script -e: exit with the child's status; -f: flush output at once.
  # set -m: a background job of a script would start with SIGINT ignored,
  # and a shell cannot trap a signal ignored at its start; a terminal's
  # programs start with SIGINT at its default, as here.
  set -m
  script -qefc "make --no-print-directory run" /dev/null <"$tmp/in" >"$out" 2>&1 &
  spid=$!
  set +m
  exec 3>"$tmp/in"
  local deadline=$((SECONDS + 90))
  until grep -q '^run: ready' "$out" 2>/dev/null; do
    if ! kill -0 "$spid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      fail "$1: no ready line"
      cat "$out"
      return 1
    fi
    sleep 0.2
  done
}

finish() { # seconds; sets code: the exit status of make (via script)
  local deadline=$((SECONDS + $1)) st=0
  while kill -0 "$spid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail "make run still running ${1}s later"
      kill "$spid"
    fi
    sleep 0.2
  done
  wait "$spid" || st=$?
  spid=
  exec 3>&-
  code=$st
}

status_of() { # host:port path
  (exec 4<>"/dev/tcp/${1%:*}/${1##*:}" && printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&4 && read -r -t 5 _ c _ <&4 && echo "$c") 2>/dev/null || echo none
}

services_left() { # pids of our binaries still running from this clone
  local p
  for p in /proc/[0-9]*; do
    case "$(readlink "$p/exe" 2>/dev/null)" in
    "$root"/bin/wristband-emulator | "$root"/bin/protected-data | "$root"/bin/public-gateway) echo "${p#/proc/}" ;;
    esac
  done
}

kid_of() { sed -n 's/.*wristband-emulator starting.* kid=\([^ ]*\).*/\1/p' "$1" | head -1; }

# 1 and 2: ready, 200, Ctrl-C.
if start_run ctrlc; then
  st=$(status_of "$GATEWAY_ADDR" /api/public/data)
  [ "$st" = 200 ] || fail "public call answered $st, want 200"
  printf '\003' >&3
  finish 30
  [ "$code" = 0 ] || fail "make run exited $code after Ctrl-C, want 0"
  if grep -E 'exited|stopped|make: \*\*\*|Error|Interrupt' "$tmp/ctrlc.out"; then fail "Ctrl-C printed the lines above"; fi
  # A shell error of the runner itself (e.g. set -u's "unbound variable").
  if grep -E 'run-local\.sh: |unbound variable' "$tmp/ctrlc.out"; then fail "the runner printed the shell errors above"; fi
  left=$(services_left)
  [ -z "$left" ] || fail "services left running after Ctrl-C: $left"
  [ "$(grep -c '^run: ready' "$tmp/ctrlc.out")" = 1 ] || fail "want exactly one ready line"
  echo "test-run-local: Ctrl-C: exit $code, quiet, nothing left"
fi

# 3 and 4: same kid; a crash stops the others.
if start_run crash; then
  k1=$(kid_of "$tmp/ctrlc.out") k2=$(kid_of "$tmp/crash.out")
  if [ -z "$k1" ] || [ "$k1" != "$k2" ]; then fail "emulator kid changed across restarts: '$k1' then '$k2'"; fi
  victim=
  for p in $(services_left); do
    [ "$(readlink "/proc/$p/exe")" = "$root/bin/protected-data" ] && victim=$p
  done
  if [ -z "$victim" ]; then
    fail "protected-data not found"
  else
    kill -KILL "$victim"
    finish 30
    [ "$code" != 0 ] || fail "make run exited 0 after protected-data crashed, want non-zero"
    grep -q '^run: protected-data exited (status 137); stopping the others' "$tmp/crash.out" ||
      fail "no line naming the crashed service"
    left=$(services_left)
    [ -z "$left" ] || fail "services left running after the crash: $left"
    echo "test-run-local: crash: exit $code, '$(grep '^run: protected-data' "$tmp/crash.out")', nothing left; kid kept ($k1)"
  fi
fi

# 5. kill (SIGTERM) of the emulator: it exits 0, yet make run did not end as
# asked: the others stop and make exits non-zero, naming it.
if start_run term; then
  victim=
  for p in $(services_left); do
    [ "$(readlink "/proc/$p/exe")" = "$root/bin/wristband-emulator" ] && victim=$p
  done
  if [ -z "$victim" ]; then
    fail "wristband-emulator not found"
  else
    kill -TERM "$victim"
    finish 30
    [ "$code" != 0 ] || fail "make run exited 0 after the emulator was killed (SIGTERM), want non-zero"
    grep -q '^run: wristband-emulator stopped (exit 0) while the others ran; stopping them' "$tmp/term.out" ||
      fail "no line naming the stopped service"
    left=$(services_left)
    [ -z "$left" ] || fail "services left running after the emulator stopped: $left"
    echo "test-run-local: SIGTERM to the emulator: exit $code, '$(grep '^run: wristband-emulator' "$tmp/term.out")', nothing left"
  fi
fi

if [ "$fails" = 0 ]; then
  echo "test-run-local: 1 passed, 0 failed"
else
  echo "test-run-local: 0 passed, 1 failed ($fails problems)"
  exit 1
fi
