#!/usr/bin/env bash
# Demo: start lanes (server + 3 workers in one process) against the local services under the
# defaults (prefix `lanes`, database `lanes`, API on 127.0.0.1:8080), submit a small workload
# with the CLI, show the result, keep running until Ctrl-C. Every example of the README works
# against it.
#
# LANES_PREFIX, DATABASE_URL, LANES_HTTP_ADDR and LANES_AMQP_URL move it elsewhere (the
# README's test does); LANES_BIN runs that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."

export LANES_HTTP_ADDR="${LANES_HTTP_ADDR:-127.0.0.1:8080}"
export LANES_API_URL="http://$LANES_HTTP_ADDR"
# The README's executor examples listen on these.
export LANES_WEBHOOK_ALLOW="${LANES_WEBHOOK_ALLOW:-http://127.0.0.1:9100/,http://127.0.0.1:9101/}"
API="$LANES_API_URL"

scripts/services.sh
if [ -n "${LANES_BIN:-}" ]; then
    LANES="$LANES_BIN"
else
    echo "==> building"
    cargo build --release
    LANES=target/release/lanes
fi

if curl -sf --max-time 2 "$API/healthz" >/dev/null; then
    echo "==> ERROR: something already answers on $API; stop it first" >&2
    exit 1
fi

LOG="$(mktemp /tmp/lanes-demo.XXXXXX.log)"
"$LANES" up --workers 3 >"$LOG" 2>&1 &
PID=$!

cleanup() {
    trap - EXIT INT TERM
    if kill -0 "$PID" 2>/dev/null; then
        echo "==> stopping lanes (SIGTERM, waiting for it to drain)"
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    echo "==> server log: $LOG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> starting lanes up --workers 3 (log: $LOG)"
for ((i = 0; ; i++)); do
    curl -sf --max-time 2 "$API/healthz" >/dev/null && break
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "==> ERROR: lanes exited; last log lines:" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
    if ((i >= 60)); then
        echo "==> ERROR: $API/healthz not answering after 60s; last log lines:" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
    sleep 1
done
echo "==> lanes is up; the dashboard is at $API/"

echo "==> submitting 30 sleep tasks on 5 resources, 5 echo tasks, 1 failing task"
for i in $(seq 1 30); do
    "$LANES" jobs submit sleep --args '{"ms":300}' --resource "repo:$((i % 5))" >/dev/null
done
for i in $(seq 1 5); do
    "$LANES" jobs submit echo --args "{\"message\":\"hello $i\"}" >/dev/null
done
"$LANES" jobs submit fail --args '{"message":"this one fails on purpose"}' --max-attempts 1 >/dev/null

echo "==> one more on repo:1, waiting for it (it runs after the earlier repo:1 tasks)"
"$LANES" jobs submit sleep --args '{"ms":500}' --resource repo:1 --wait

echo "==> jobs"
"$LANES" jobs list --limit 50

cat <<EOT

==> the dashboard:          $API/
==> the CLI:                $LANES jobs list | jobs show ID | queues list | workers list
==> the HTTP API:           $API/jobs (JSON; explore it at $API/docs)
==> RabbitMQ management UI: http://127.0.0.1:15672 (guest/guest; queues named ${LANES_PREFIX:-lanes}.*)
==> lanes keeps running; press Ctrl-C to stop it.
EOT
wait "$PID"
