#!/usr/bin/env bash
# Runs every test of the workspace: unit, doc and end-to-end tests, including the Redis
# (single and cluster) and ZooKeeper backends against real servers started here on free
# loopback ports and stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

# Tests that need Redis/ZooKeeper or Chromium are #[ignore]d ("needs Redis: run
# scripts/test-all.sh"), so plain `cargo test` lists them as ignored; here they run
# (--include-ignored) against the servers started below (and the browser services.sh
# installs), and fail if a server's MPUSH_TEST_* variable or the browser is missing.
test_args=(--include-ignored)
state=$(mktemp -d /tmp/mpush-test-services.XXXXXX)
# The trap must not change the exit status: cleanup failures are not test failures.
trap 'services_stop "$state" || true; rm -rf "$state" 2>/dev/null || true' EXIT
if ! services_start "$state"; then
  if [ "${CI:-}" = "true" ]; then
    echo "test services failed to start" >&2
    exit 1
  fi
  echo "WARNING: test services unavailable; Redis/ZooKeeper/Chromium tests stay ignored" >&2
  unset MPUSH_TEST_REDIS MPUSH_TEST_REDIS_CLUSTER MPUSH_TEST_ZK MPUSH_TEST_CHROMIUM
  test_args=()
fi
# One invocation: unit, integration and doc tests of every crate; examples are built too.
# Extra arguments are cargo's (e.g. -p mpush); the test binaries get test_args.
status=0
cargo test --workspace --locked --no-fail-fast "$@" -- "${test_args[@]}" || status=$?
# The launcher's OpenTelemetry exporter is behind the `otel` feature (off by default): the
# launcher is rebuilt with it (after the run above, whose examples are built without it) and
# its one test runs against a stand-in OTLP collector.
if [ "$#" -eq 0 ]; then
  cargo build --locked --features otel --example launcher || status=$?
  cargo test --locked --features otel --test otel || status=$?
fi
exit "$status"
