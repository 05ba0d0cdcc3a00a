#!/usr/bin/env bash
# The one run command, on a fresh clone:   ./scripts/serve.sh [nometer serve flags]
#
#   1. .venv (python3 -m venv): dependencies from requirements/serve.lock (hashes), nometer editable
#   2. with no backend given (no flags, no NOMETER_CONFIG / NOMETER_BACKENDS) and no GPU:
#      the CPU build of vLLM and a tiny model generated offline, cached in $NOMETER_CACHE
#      (default ~/.cache/nometer; about 2 min and 2.5 GB the first time), launched and
#      supervised by nometer itself. Its text is gibberish: it only demonstrates the gateway.
#   3. nometer serve on http://127.0.0.1:7878 (OpenAI base_url: http://127.0.0.1:7878/v1)
#
# Examples:  ./scripts/serve.sh --backend http://127.0.0.1:8000/v1
#            ./scripts/serve.sh --config deploy/nometer.example.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.nometer-run-deps
hash=$(cat pyproject.toml requirements/serve.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
  echo "nometer: installing into .venv ..." >&2
  # dependencies pinned with hashes (requirements/README.md), then nometer itself alone
  .venv/bin/python -m pip install -q --require-hashes -r requirements/serve.lock
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$hash" >"$stamp"
fi

if [ $# -eq 0 ] && [ -z "${NOMETER_CONFIG:-}" ] && [ -z "${NOMETER_BACKENDS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "nometer: a GPU is present; start vLLM yourself (vllm serve MODEL) and pass --backend" \
         "http://127.0.0.1:8000/v1, or list it under 'managed:' in a config (see deploy/nometer.example.yaml)" >&2
    exit 2
  fi
  echo "nometer: no backend given and no GPU: using the CPU build of vLLM with a tiny generated model" >&2
  echo "nometer: (its answers are gibberish; it only demonstrates the gateway)" >&2
  paths=$(.venv/bin/python -m gateway.backends.cpu_vllm ensure)
  python=$(sed -n 1p <<<"$paths"); model=$(sed -n 2p <<<"$paths")
  exec .venv/bin/nometer serve --managed-model "$model" --managed-python "$python" --managed-name tiny-llama \
    --managed-cpu-defaults \
    --managed-port "${NOMETER_MANAGED_PORT:-8011}"
fi
exec .venv/bin/nometer serve "$@"
