#!/usr/bin/env bash
# The one test command, on a fresh clone or a dev machine:   ./scripts/test.sh [pytest args]
#
#   1. .venv (python3 -m venv) with the `test` extra's dependencies from requirements/test.lock
#      (pinned, with hashes) and the project itself, editable
#   1b. static checks: ruff check, ruff format --check, mypy --strict (gateway adapters pricing
#      tests), lint-imports (the layer contracts in pyproject.toml); any failure stops here
#   2. PostgreSQL and Redis on 127.0.0.1, started if they do not answer
#   2b. Debian's chromium, for the browser test of the dashboard
#   2c. the Node clients (OpenAI Node SDK, Codex CLI, Claude Code) from tests/clients/node's
#       package-lock.json (`npm ci`, only when the lock changed; each CLI's binary is inside its package)
#   3. the CPU vLLM venv and tiny model, cached in $NOMETER_CACHE (default ~/.cache/nometer):
#      about 2 min and 2.5 GB the first time, nothing after
#   4. python -m pytest "$@"; its exit status is ours (5, "no tests collected", is an error too)
#
# NOMETER_SKIP_CHECKS=1 skips step 1b (quick local reruns only; refused in CI).
#
# NOMETER_SKIP_VLLM=1 skips step 3 and the real-vLLM tests: quick local runs only (refused in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%ds)\n' "$*" "$SECONDS" >&2; }

# poll CMD... until it succeeds, for at most $1 seconds
wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then echo "not ready after ${limit}s: $*" >&2; return 1; fi
    sleep 0.5
  done
}

# install a Debian package when COMMAND is missing (as root, e.g. on CI); else explain
need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing $pkg"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  else
    echo "$cmd not found: install the Debian package $pkg" >&2; return 1
  fi
}

step "python venv"
[ -x .venv/bin/python ] || python3 -m venv .venv
deps_stamp=.venv/.nometer-deps
deps_hash=$(cat pyproject.toml requirements/test.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$deps_stamp" 2>/dev/null)" != "$deps_hash" ]; then
  # every dependency from the hash-locked file (requirements/README.md), then nometer itself alone
  .venv/bin/python -m pip install -q --require-hashes -r requirements/test.lock
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$deps_hash" >"$deps_stamp"
fi

if [ "${NOMETER_SKIP_CHECKS:-}" = 1 ]; then
  if [ "${CI:-}" = true ]; then echo "NOMETER_SKIP_CHECKS=1 is refused in CI" >&2; exit 2; fi
  step "static checks skipped (NOMETER_SKIP_CHECKS=1)"
else
  step "static checks: ruff, ruff format, mypy --strict, lint-imports"
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy gateway adapters pricing tests
  .venv/bin/lint-imports
fi

step "PostgreSQL"
if ! pg_isready -q -h 127.0.0.1; then
  need pg_ctlcluster postgresql
  version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster "$version" main status >/dev/null ||
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for 60 pg_isready -q -h 127.0.0.1
fi

step "Redis"
if ! redis-cli ping >/dev/null 2>&1; then
  need redis-server redis-server
  redis-server --daemonize yes --port 6379 --save "" >/dev/null
  wait_for 30 redis-cli ping
fi

# Debian's Chromium, for the dashboard's browser test (Playwright drives it; never `playwright install`)
step "Chromium"
need chromium chromium

step "Node clients (npm ci)"
need npm npm
node_dir=tests/clients/node
node_stamp=$node_dir/node_modules/.nometer-lock
node_hash=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_hash" ]; then
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$node_hash" >"$node_stamp"
fi

if [ "${NOMETER_SKIP_VLLM:-}" = 1 ]; then
  if [ "${CI:-}" = true ]; then echo "NOMETER_SKIP_VLLM=1 is refused in CI" >&2; exit 2; fi
  step "vLLM skipped (NOMETER_SKIP_VLLM=1)"
else
  step "CPU vLLM venv + tiny model"
  .venv/bin/python -m gateway.backends.cpu_vllm ensure >/dev/null
fi

step "pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then echo "error: pytest collected no tests" >&2; fi
step "done: exit $status"
exit "$status"
