"""Measured GPU energy (NVML), split across the requests in flight.

When ``nvidia-ml-py`` is installed and NVML finds GPUs, a sampler reads the total-energy counter
of every GPU once a second. Each interval's average power is shared by all in-flight requests on
this box's backends (managed ones, or backends on a loopback address): a backend gets
``watts x its in-flight / all in-flight``, and its energy clock (``Backend.energy_clock``, advanced
per request like the busy-share clock) turns that into each request's joules. Without NVML the
meter estimates energy as ``busy_watts x busy share`` (pricing/local.py).

NVML measures the GPU boards only, not the CPU, memory, fans or power supply losses of the box: a
measured figure undercounts wall energy. The receipt says which method it used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from gateway.backends.backend import Backend

log = logging.getLogger("nometer.energy")

EnergyReader = Callable[[], float]  # cumulative joules of every GPU on the box


def nvml_reader() -> EnergyReader | None:
    """A reader over NVML's total-energy counters, or None where NVML or GPUs are missing."""
    try:
        import pynvml  # nvidia-ml-py: optional
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        for h in handles:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(h)  # supported (Volta and later)?
    except pynvml.NVMLError as exc:
        log.info("NVML unavailable (%s): energy will be estimated from configured watts", exc)
        return None
    if not handles:
        return None
    log.info("measuring GPU energy with NVML on %d GPU(s)", len(handles))
    return lambda: sum(pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles) / 1000.0  # mJ -> J


class EnergySampler:
    def __init__(self, backends: Sequence[Backend], reader: EnergyReader, interval_s: float = 1.0):
        self.backends = list(backends)
        self.reader = reader
        self.interval_s = interval_s
        self._last: tuple[float, float] | None = None
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> float | None:
        """Read the counter; give each local backend its share of the interval's average power."""
        now, joules = time.monotonic(), self.reader()
        last, self._last = self._last, (now, joules)
        if last is None or now <= last[0]:
            return None
        watts = max(0.0, (joules - last[1]) / (now - last[0]))
        inflight = sum(b.outstanding for b in self.backends)
        for b in self.backends:
            b._advance()  # close the previous interval at the previous power
            b.power_w = watts * b.outstanding / inflight if inflight else 0.0
        return watts

    def start(self) -> None:
        for b in self.backends:
            b.power_w = 0.0  # measured from now on (None would mean "not measured")
        self.sample()
        self._task = asyncio.create_task(self._run(), name="nometer-energy")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.sample()
            except Exception:
                log.exception("energy sample failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
