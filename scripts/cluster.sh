#!/usr/bin/env bash
# A RabbitMQ cluster of three nodes on this machine, apart from the machine's own broker, for
# the cluster test (tests/cluster.rs) and `lanes bench` on a cluster. Needs rabbitmq-server
# (scripts/services.sh installs it) and root.
#
#   scripts/cluster.sh up        start lanes1..3@localhost, join them, wait until all run
#   scripts/cluster.sh stop K    kill node K at once (SIGKILL: a machine that died)
#   scripts/cluster.sh start K   start node K again; it rejoins the cluster
#   scripts/cluster.sh down      stop every node and delete their data
#   scripts/cluster.sh urls      print the AMQP URLs (comma separated), then the management URLs
#
# Node K listens on 127.0.0.1 only: AMQP 5680+K, management 15680+K, distribution 25680+K.
# Data and logs are under /var/lib/rabbitmq/lanes-cluster/nodeK (owned by the rabbitmq user).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

NODES=3
BASE=/var/lib/rabbitmq/lanes-cluster
TIMEOUT="${CLUSTER_TIMEOUT:-90}"

say() { echo "==> cluster: $*"; }
die() {
    echo "==> cluster: ERROR: $*" >&2
    exit 1
}
node() { echo "lanes$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
mgmt_port() { echo $((15680 + $1)); }
ctl() { # ctl K ARGS...: rabbitmqctl against node K, as the rabbitmq user (its cookie)
    local k=$1
    shift
    su rabbitmq -s /bin/sh -c "HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmqctl -q -n $(node "$k") $*"
}

start_node() {
    local k=$1 dir="$BASE/node$1"
    mkdir -p "$dir/mnesia" "$dir/log"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$k")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$k")
cluster_partition_handling = pause_minority
CONF
    echo '[rabbitmq_management].' >"$dir/enabled_plugins"
    chown -R rabbitmq:rabbitmq "$BASE"
    su rabbitmq -s /bin/sh -c "cd /var/lib/rabbitmq && env HOME=/var/lib/rabbitmq \
        RABBITMQ_NODENAME=$(node "$k") RABBITMQ_NODE_PORT=$(amqp_port "$k") \
        RABBITMQ_DIST_PORT=$((25680 + k)) RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf \
        RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins RABBITMQ_MNESIA_BASE=$dir/mnesia \
        RABBITMQ_LOG_BASE=$dir/log RABBITMQ_PID_FILE=$dir/pid \
        /usr/lib/rabbitmq/bin/rabbitmq-server -detached" >/dev/null 2>&1 || true
}

await_node() { # until the node answers and has booted (it refuses connections at first)
    local deadline=$((SECONDS + TIMEOUT))
    until ctl "$1" await_startup --timeout 10 >/dev/null 2>&1; do
        ((SECONDS < deadline)) ||
            die "node $(node "$1") did not start within ${TIMEOUT}s (logs in $BASE/node$1/log)"
        sleep 1
    done
}

node_pid() { # the node's Erlang VM, found by the node name in its environment
    local p
    for p in $(pgrep -x beam.smp); do
        if tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qx "RABBITMQ_NODENAME=$(node "$1")"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

running() { # running K: whether node K's process is alive
    local pid
    pid="$(node_pid "$1" 2>/dev/null)" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

case "${1:-}" in
up)
    command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed (run scripts/services.sh)"
    if running 1 && running 2 && running 3 &&
        [ "$(ctl 1 eval "'length(rabbit_nodes:all_running()).'" 2>/dev/null)" = "$NODES" ]; then
        say "already up"
        exit 0
    fi
    "$0" down >/dev/null 2>&1 || true
    for k in $(seq 1 $NODES); do start_node "$k"; done
    for k in $(seq 1 $NODES); do await_node "$k"; done
    for k in $(seq 2 $NODES); do
        ctl "$k" stop_app >/dev/null
        ctl "$k" join_cluster "$(node 1)" >/dev/null
        ctl "$k" start_app >/dev/null
    done
    deadline=$((SECONDS + TIMEOUT))
    until [ "$(ctl 1 eval "'length(rabbit_nodes:all_running()).'" 2>/dev/null)" = "$NODES" ]; do
        ((SECONDS < deadline)) || die "the nodes did not join within ${TIMEOUT}s"
        sleep 1
    done
    say "up: $NODES nodes running"
    ;;
stop)
    k="${2:?node number}"
    pid="$(node_pid "$k")" || die "node $(node "$k") is not running"
    kill -KILL "$pid"
    for _ in $(seq 1 50); do running "$k" || break; sleep 0.1; done
    say "node $(node "$k") killed"
    ;;
start)
    k="${2:?node number}"
    start_node "$k"
    await_node "$k"
    say "node $(node "$k") running again"
    ;;
down)
    for k in $(seq 1 $NODES); do
        if pid="$(node_pid "$k")"; then
            kill -KILL "$pid" 2>/dev/null || true
            su rabbitmq -s /bin/sh -c "HOME=/var/lib/rabbitmq epmd -stop lanes$k" >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$BASE"
    say "down"
    ;;
urls)
    amqp="" mgmt=""
    for k in $(seq 1 $NODES); do
        amqp="${amqp:+$amqp,}amqp://guest:guest@127.0.0.1:$(amqp_port "$k")/%2f"
        mgmt="${mgmt:+$mgmt,}http://guest:guest@127.0.0.1:$(mgmt_port "$k")"
    done
    echo "$amqp"
    echo "$mgmt"
    ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
