#!/usr/bin/env bash
# Makes clients/python/.venv: a Python with this package (editable), pika and pytest. Creates
# it on first use and installs again when pyproject.toml changed; prints its python's path.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv >&2
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e . pytest pika >&2
    touch .venv/.installed
fi
echo "$PWD/.venv/bin/python"
