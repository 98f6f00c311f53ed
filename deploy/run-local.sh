#!/bin/sh
# Try the scale-out set-up on one machine, loopback only: redis-server (AOF) + HAProxy on
# $SIS_PORT (default 8080) + 3 `sis-stream serve --redis` on the next three ports + 1
# `sis-stream worker`. Engine `none` (timing only) unless SIS_ENGINE_ARGS says otherwise.
#
#   deploy/run-local.sh                 # until Ctrl-C
#   SIS_RUN_SECONDS=30 deploy/run-local.sh
#
# Needs redis-server and haproxy on PATH (Debian: apt-get install redis-server haproxy) and
# sis-stream installed with the cluster extra. Everything is stopped on exit.
set -eu

PORT=${SIS_PORT:-8080}
REDIS_PORT=${SIS_REDIS_PORT:-6390}
SIS=${SIS_STREAM:-sis-stream}
ENGINE_ARGS=${SIS_ENGINE_ARGS:---engine english_16k_common=none --engine chinese_8k_common=none}
HERE=$(cd "$(dirname "$0")" && pwd)
RUN=$(mktemp -d "${TMPDIR:-/tmp}/sis-local.XXXXXX")
PIDS=""

cleanup() {
    trap - EXIT INT TERM
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in $PIDS; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

for bin in redis-server haproxy "$SIS"; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || {
        echo "run-local.sh: $bin not found (apt-get install redis-server haproxy; pip install 'sis-stream[cluster]')" >&2
        exit 2; }
done
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --appendonly yes --appendfsync everysec --save "" \
    --dir "$RUN" --daemonize no >"$RUN/redis.log" 2>&1 &
PIDS="$PIDS $!"
REDIS="redis://127.0.0.1:$REDIS_PORT/0"

for i in 1 2 3; do
    p=$((PORT + i))
    # shellcheck disable=SC2086
    $SIS serve --no-auth --port "$p" --redis "$REDIS" --drain-grace 30 --fetch-allow 127.0.0.1 \
        $ENGINE_ARGS >"$RUN/serve$i.log" 2>&1 &
    PIDS="$PIDS $!"
done
# shellcheck disable=SC2086
$SIS worker --redis "$REDIS" --fetch-allow 127.0.0.1 $ENGINE_ARGS >"$RUN/worker.log" 2>&1 &
PIDS="$PIDS $!"

sed -e "s/127.0.0.1:8080/127.0.0.1:$PORT/" -e "s/127.0.0.1:8081/127.0.0.1:$((PORT + 1))/" \
    -e "s/127.0.0.1:8082/127.0.0.1:$((PORT + 2))/" -e "s/127.0.0.1:8083/127.0.0.1:$((PORT + 3))/" \
    -e "s|/run/haproxy/sis-admin.sock|$RUN/haproxy.sock|" "$HERE/haproxy.cfg" >"$RUN/haproxy.cfg"
"$HAPROXY" -W -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy.log" 2>&1 &
PIDS="$PIDS $!"

echo "sis-stream behind HAProxy: http://127.0.0.1:$PORT (serve on $((PORT + 1))-$((PORT + 3)), redis $REDIS)"
echo "logs in $RUN; Ctrl-C stops everything"
# `sleep & wait`: a signal interrupts the wait at once and runs the cleanup.
if [ -n "${SIS_RUN_SECONDS:-}" ]; then
    sleep "$SIS_RUN_SECONDS" & PIDS="$PIDS $!"; wait $!
else
    while :; do sleep 3600 & PIDS="$PIDS $!"; wait $!; done
fi
