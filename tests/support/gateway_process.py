"""A real nometer gateway in its own process: ``python -m gateway serve`` (uvloop, the CLI's path).

For what a gateway in a thread of the test cannot show: its own CPU time and RSS, its file
descriptor limit (``rlimit_nofile`` sets one before it starts), and whether it is still alive
after hostile input. The config is a YAML file in ``tmp_path``; the ledger a SQLite file there.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.ports import HOST, free_port

START_TIMEOUT_S = 60.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class GatewayProcess:
    def __init__(
        self,
        tmp_path: Path,
        config: dict[str, Any],
        *,
        rlimit_nofile: tuple[int, int] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.port = free_port()
        config = {**config, "server": {**config.get("server", {}), "host": HOST, "port": self.port}}
        config.setdefault("ledger", {"path": str(tmp_path / "ledger.db"), "flush_interval_ms": 20})
        self.config_path = tmp_path / "nometer.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp_path / "gateway.log"
        self.url = f"http://{HOST}:{self.port}"
        self.base_url = self.url + "/v1"
        self._rlimit = rlimit_nofile
        self._env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def _limit(self) -> None:
        if self._rlimit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self._rlimit)

    def start(self) -> GatewayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOMETER_")}
        env["PYTHONPATH"] = os.environ.get("PYTHONPATH", str(Path(__file__).parents[2]))
        env.update(self._env)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gateway did not start: {self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def cpu_seconds(self) -> float:
        """User + system CPU time of the gateway process (not its meter process)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def open_files_limit(self) -> tuple[int, int]:
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
        raise RuntimeError("no open-files limit")

    def metric(self, name: str) -> float:
        """The sum of a Prometheus metric's samples at /metrics (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total
