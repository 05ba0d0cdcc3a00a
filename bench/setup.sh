#!/usr/bin/env bash
# One-time setup for the bench/ harness: two venvs outside the repo, the repo's own venv, plus wrk.
#   BENCH_VENV   (default $HOME/.cache/nometer-bench/bench-venv):   fake upstream, load.py, relay_compare.py
#                (uvloop, httptools, aiohttp, orjson, uvicorn, httpx; pinned to the versions nometer runs on)
#   LITELLM_VENV (default $HOME/.cache/nometer-bench/litellm-venv): LiteLLM proxy 1.110.2
#   NOMETER_VENV (default <repo>/.venv): the gateway under test, `pip install -e <repo>` if missing
# Usage: bash bench/setup.sh        then: "$BENCH_VENV/bin/python" bench/run_compare.py --preset nometer --preset litellm
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH_VENV=${BENCH_VENV:-$HOME/.cache/nometer-bench/bench-venv}
LITELLM_VENV=${LITELLM_VENV:-$HOME/.cache/nometer-bench/litellm-venv}
NOMETER_VENV=${NOMETER_VENV:-$REPO/.venv}
LITELLM_VERSION=1.110.2   # never 1.82.7 / 1.82.8

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

[ -x "$NOMETER_VENV/bin/nometer" ] || { [ -x "$NOMETER_VENV/bin/python" ] || python3 -m venv "$NOMETER_VENV"
  "$NOMETER_VENV/bin/pip" install -q -e "$REPO"; }

[ -x "$BENCH_VENV/bin/python" ] || python3 -m venv "$BENCH_VENV"
"$BENCH_VENV/bin/pip" install -q uvloop==0.23.0 httptools==0.9.0 aiohttp==3.14.5 orjson==3.13.0 \
  uvicorn==0.54.0 httpx==0.28.1

[ -x "$LITELLM_VENV/bin/python" ] || python3 -m venv "$LITELLM_VENV"
# Plain `pip install 'litellm[proxy]==1.110.2'` is the intended install. On a package index that
# lacks `litellm-proxy` (and the exact litellm-proxy-extras / litellm-enterprise pins) it fails to
# resolve; then install the wheel plus the [proxy] extra's requirements (read from the wheel's
# metadata), with the newest available versions of those two pins. The proxy code itself is in
# the litellm wheel.
have=$("$LITELLM_VENV/bin/python" -c "import importlib.metadata as m; print(m.version('litellm'))" 2>/dev/null || true)
if [ "$have" = "$LITELLM_VERSION" ] && [ -x "$LITELLM_VENV/bin/litellm" ]; then
  :   # already installed
elif ! "$LITELLM_VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"; then
  tmp=$(mktemp -d)
  "$LITELLM_VENV/bin/pip" download -q --no-deps -d "$tmp" "litellm==$LITELLM_VERSION"
  "$LITELLM_VENV/bin/python" - "$tmp" > "$tmp/proxy-reqs.txt" <<'PYEOF'
import glob, sys, zipfile
from pip._vendor.packaging.requirements import Requirement
whl = zipfile.ZipFile(glob.glob(sys.argv[1] + "/litellm-*.whl")[0])
meta = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))).decode()
for line in meta.splitlines():
    if not line.startswith("Requires-Dist: "):
        continue
    req = Requirement(line[len("Requires-Dist: "):])
    if not req.marker or "extra" not in str(req.marker) or not req.marker.evaluate({"extra": "proxy"}):
        continue
    if req.name == "litellm-proxy":
        continue                      # not on every index; the wheel carries the proxy code
    if req.name in ("litellm-proxy-extras", "litellm-enterprise"):
        print(req.name)               # exact pin may be missing: take the newest available
    else:
        extras = "[" + ",".join(sorted(req.extras)) + "]" if req.extras else ""
        print(f"{req.name}{extras}{req.specifier}")
PYEOF
  "$LITELLM_VENV/bin/pip" install -q "$tmp"/litellm-*.whl -r "$tmp/proxy-reqs.txt"
fi
"$LITELLM_VENV/bin/python" -c "import importlib.metadata as m; print('litellm', m.version('litellm'))"
"$NOMETER_VENV/bin/nometer" --help >/dev/null && echo "nometer: $NOMETER_VENV/bin/nometer"
