#!/usr/bin/env bash
# Ensure the local services lanes needs are installed, running and ready:
#   RabbitMQ   127.0.0.1:5672  guest/guest, management UI/API on 127.0.0.1:15672
#   PostgreSQL 127.0.0.1:5432  trust auth for 127.0.0.1, superuser role "root"
# Meant for a Debian/Ubuntu machine where we are root (dev box, CI). Idempotent:
# when everything is already up it only checks, and returns within a second or two.
# Running services are never stopped or restarted.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive
TIMEOUT="${SERVICES_TIMEOUT:-60}" # seconds to wait for each service to become ready

say() { echo "==> $*"; }
warn() { echo "==> WARNING: $*" >&2; }
die() {
    echo "==> ERROR: $*" >&2
    exit 1
}

APT_LOG=""
apt_install() { # apt_install [apt-get options] PACKAGE...; output goes to a log file
    if [ -z "$APT_LOG" ]; then
        APT_LOG="$(mktemp /tmp/services-apt.XXXXXX.log)"
        apt-get update >>"$APT_LOG" 2>&1 || warn "apt-get update failed (see $APT_LOG)"
    fi
    if ! apt-get install -y "$@" </dev/null >>"$APT_LOG" 2>&1; then
        tail -n 20 "$APT_LOG" >&2
        warn "apt-get install $* failed (full log: $APT_LOG)"
        return 1
    fi
}

# wait_for NAME COMMAND...: retry COMMAND every second, at most $TIMEOUT seconds.
wait_for() {
    local name=$1
    shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "$name: not ready after ${TIMEOUT}s"
        fi
        sleep 1
    done
}

tcp_open() { timeout 2 bash -c ": >/dev/tcp/$1/$2" 2>/dev/null; }

# Tools this script itself uses.
if ! command -v curl >/dev/null; then
    say "curl: installing"
    apt_install curl
fi

# ---------------------------------------------------------------- RabbitMQ
rabbit_ready() { tcp_open 127.0.0.1 5672; }
mgmt_ready() { curl -sf --max-time 2 -u guest:guest http://127.0.0.1:15672/api/overview; }

if ! command -v rabbitmq-server >/dev/null; then
    say "RabbitMQ: installing"
    apt_install rabbitmq-server
fi
if rabbit_ready; then
    say "RabbitMQ: running"
else
    say "RabbitMQ: starting"
    # Every worker holds a connection (a socket each): let the broker open as many files as
    # this machine allows, not the soft limit of 1,024 its user gets (the node reads
    # rabbitmq-env.conf as a shell script when it starts).
    RABBIT_ENV=/etc/rabbitmq/rabbitmq-env.conf
    if [ -d /etc/rabbitmq ] && ! grep -qs 'ulimit -n' "$RABBIT_ENV"; then
        echo 'ulimit -n "$(ulimit -Hn)" 2>/dev/null || true' >>"$RABBIT_ENV"
    fi
    # Fails harmlessly if a node is already booting; the wait below decides.
    rabbitmq-server -detached || warn "rabbitmq-server -detached exited with $?"
    wait_for "RabbitMQ (127.0.0.1:5672; logs in /var/log/rabbitmq/)" rabbit_ready
    say "RabbitMQ: ready"
fi

if mgmt_ready >/dev/null; then
    say "RabbitMQ management: ready on http://127.0.0.1:15672"
else
    say "RabbitMQ management: enabling plugin"
    rabbitmq-plugins enable rabbitmq_management >/dev/null ||
        die "could not enable rabbitmq_management"
    wait_for "RabbitMQ management API (http://127.0.0.1:15672/api/overview)" mgmt_ready
    say "RabbitMQ management: ready on http://127.0.0.1:15672"
fi

# -------------------------------------------------------------- PostgreSQL
pg_ready() { pg_isready -q -t 2 -h 127.0.0.1 -p 5432; }
# root over TCP, never prompting for a password.
pg_root_ok() { PGCONNECT_TIMEOUT=3 psql -w -h 127.0.0.1 -U root -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }
as_postgres() { (cd / && su postgres -s /bin/sh -c "$1"); }

if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    say "PostgreSQL: installing"
    apt_install postgresql
fi
# shellcheck disable=SC2012 # version directories, plain names
PG_VERSION="$(ls /etc/postgresql | head -1)"
PG_HBA="/etc/postgresql/$PG_VERSION/main/pg_hba.conf"

if pg_ready; then
    say "PostgreSQL: running"
else
    say "PostgreSQL $PG_VERSION: starting"
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start ||
        warn "pg_ctlcluster start exited with $?"
    wait_for "PostgreSQL (127.0.0.1:5432; logs in /var/log/postgresql/)" pg_ready
    say "PostgreSQL: ready"
fi

if ! pg_root_ok; then
    # Password auth on the loopback lines -> trust (a dev/CI machine only).
    hba_re='^[[:space:]]*host[[:space:]].*[[:space:]](127\.0\.0\.1/32|::1/128)[[:space:]]+(md5|scram-sha-256|password)[[:space:]]*$'
    if [ -f "$PG_HBA" ] && grep -Eq "$hba_re" "$PG_HBA"; then
        say "PostgreSQL: switching 127.0.0.1/::1 to trust auth in $PG_HBA"
        sed -Ei "\\#$hba_re# s#(md5|scram-sha-256|password)[[:space:]]*\$#trust#" "$PG_HBA"
        pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main reload
    fi
    if [ "$(as_postgres "psql -Atqc \"SELECT 1 FROM pg_roles WHERE rolname = 'root'\"")" != 1 ]; then
        say "PostgreSQL: creating superuser role root"
        as_postgres "psql -qc 'CREATE ROLE root SUPERUSER LOGIN'"
    fi
    wait_for "PostgreSQL login as root (psql -h 127.0.0.1 -U root postgres)" pg_root_ok
fi
say "PostgreSQL: root can log in on 127.0.0.1:5432"

# ----------------------------------------------------------- docker-compose
# Only used to validate docker-compose.yml; not fatal if it cannot be installed.
if command -v docker-compose >/dev/null; then
    say "docker-compose: present"
else
    say "docker-compose: installing"
    if apt_install --no-install-recommends docker-compose >/dev/null; then
        say "docker-compose: installed"
    else
        warn "could not install docker-compose (continuing)"
    fi
fi

# ------------------------------------------------------- python3 and flock
# The example executor (examples/executor.py, run by tests/it/executor.rs) and the execution-log
# tasks (flock) need them.
if command -v python3 >/dev/null && command -v flock >/dev/null; then
    say "python3 + flock: present"
else
    say "python3 + flock: installing"
    if apt_install --no-install-recommends python3 util-linux >/dev/null; then
        say "python3 + flock: installed"
    else
        warn "could not install python3/util-linux (continuing; tests/it/executor.rs will fail)"
    fi
fi

# ------------------------------------------------- network namespace tools
# tests/partition.rs builds its own network (ip netns, veth, a bridge), relays the services into
# it (socat) and cuts it (nft).
if command -v ip >/dev/null && command -v nft >/dev/null && command -v socat >/dev/null; then
    say "ip + nft + socat: present"
else
    say "ip + nft + socat: installing"
    if apt_install --no-install-recommends iproute2 nftables socat >/dev/null; then
        say "ip + nft + socat: installed"
    else
        warn "could not install iproute2/nftables/socat (continuing; tests/partition.rs will fail)"
    fi
fi

# ------------------------------------------------------- headless Chromium
# Only the management-UI test (tests/it/ui.rs) uses these; not fatal if they cannot be installed.
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    say "chromium + chromedriver: present"
else
    say "chromium + chromedriver: installing"
    if apt_install --no-install-recommends chromium chromium-driver >/dev/null; then
        say "chromium + chromedriver: installed"
    else
        warn "could not install chromium/chromium-driver (continuing; tests/it/ui.rs will fail)"
    fi
fi
