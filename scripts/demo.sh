#!/usr/bin/env bash
# Demo: start lanes (server + 3 workers in one process) against the local services,
# submit a small workload with the CLI, show the result, keep running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

export LANES_PREFIX=demo                              # own queues/exchanges on the shared broker
export DATABASE_URL=postgres://127.0.0.1/lanes_demo   # own database (created if missing)
API=http://127.0.0.1:8080
LANES=target/release/lanes

scripts/services.sh
echo "==> building"
cargo build --release

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
echo "==> lanes is up"

echo "==> submitting 30 sleep tasks on 5 resources, 5 echo tasks, 1 failing task"
for i in $(seq 1 30); do
    "$LANES" submit sleep --args '{"ms":300}' --resource "repo:$((i % 5))" >/dev/null
done
for i in $(seq 1 5); do
    "$LANES" submit echo --args "{\"message\":\"hello $i\"}" >/dev/null
done
"$LANES" submit fail --args '{"message":"this one fails on purpose"}' --max-attempts 1 >/dev/null

echo "==> one more on repo:1, waiting for it (it runs after the earlier repo:1 tasks)"
"$LANES" submit sleep --args '{"ms":500}' --resource repo:1 --wait

echo "==> jobs"
"$LANES" jobs --limit 50

cat <<EOT

==> RabbitMQ management UI: http://127.0.0.1:15672 (guest/guest; queues named demo.*)
==> lanes HTTP API:         $API (try: curl $API/jobs, $API/queues, $API/workers)
==> CLI: LANES_PREFIX=$LANES_PREFIX DATABASE_URL=$DATABASE_URL $LANES jobs|queues|workers
==> lanes keeps running; press Ctrl-C to stop it.
EOT
wait "$PID"
