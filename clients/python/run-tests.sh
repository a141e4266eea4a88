#!/usr/bin/env bash
# Runs the client's tests against a real lanes (target/debug/lanes of this repository, or
# $LANES_BIN), RabbitMQ on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432 (user root).
# Creates .venv on first use; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# (Re)install when the venv is new or pyproject.toml changed since the last install.
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e . pytest pika
    touch .venv/.installed
fi
exec .venv/bin/python -m pytest -q "$@"
