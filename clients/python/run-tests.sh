#!/usr/bin/env bash
# Runs the client's tests against a real lanes (target/debug/lanes of this repository, or
# $LANES_BIN), RabbitMQ on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432 (user root).
# Creates .venv on first use (venv.sh); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

python="$(./venv.sh)"
exec "$python" -m pytest -q "$@"
