#!/usr/bin/env bash
# Full check: local services, formatting, lints, tests. Exits non-zero on the first failure.
set -euo pipefail

# The exact cargo commands, easy to change in one place.
FMT_CMD=(cargo fmt --check)
CLIPPY_CMD=(cargo clippy --all-targets -- -D warnings)
# `cargo test` builds examples in test mode only; the suite runs the example worker as a binary.
EXAMPLES_CMD=(cargo build --examples)
TEST_CMD=(cargo test --all-targets)
# `--all-targets` leaves out doctests: the README's Rust examples are compiled here.
DOC_CMD=(cargo test --doc)
# The Python client's tests, against the `lanes` binary the step before built.
PYTHON_CMD=(clients/python/run-tests.sh)

cd "$(dirname "$0")/.."

run() {
    echo "==> $*"
    "$@"
}

run scripts/services.sh
run "${FMT_CMD[@]}"
run "${CLIPPY_CMD[@]}"
run "${EXAMPLES_CMD[@]}"
run "${TEST_CMD[@]}"
run "${DOC_CMD[@]}"
run "${PYTHON_CMD[@]}"
echo "==> all checks passed"
