"""The recorder's on-disk spool: what the ledger cannot take now is kept beside it, never dropped.

Two append-only files per gateway process (per hash chain), in ``ledger.spool_dir`` (default
``<ledger dir>/spool``, mode 0700):

- ``<chain>.rows``: sealed batches the store could not write (down, read-only, locked, timing
  out), or written while older ones still wait, so they stay in seal order. Replayed in order, one
  batch per transaction, when the store is back; replay is idempotent (``INSERT ... ON CONFLICT DO
  NOTHING`` on the request uid and the chain position), so a batch written twice (a commit whose
  answer was lost, a crash between write and consume) is counted once.
- ``<chain>.intake``: requests recorded while the in-memory queue was full. ``offer`` hands one to
  a thread (a ``SimpleQueue.put``: never blocks the event loop); the thread pickles what it has and
  appends it with one fsync. The recorder takes them back when the queue has room, meters and
  seals them like any other request. These hold the raw request and answer (prompt text) until
  they are metered; their space is reclaimed once consumed.

File format: an 8-byte header (the offset of the first unconsumed frame), then frames
``[length u32][crc32 u32][payload]``. Appends go at the end, then fsync; consuming rewrites the
header; a fully consumed file is truncated back to its header. A torn last frame (kill -9 during
an append) fails its CRC and is cut off on open. Each file is held with ``flock`` by its process:
a file nobody holds belongs to a process that died, and the next gateway to start with this
spool directory replays it (rows) or meters it (intake), then deletes it.

Bound: this process's two files together stay under ``ledger.spool_max_bytes``; past it an append
is refused (``SpoolFull``) and the recorder logs it loudly and counts the loss.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.ledger.events import RequestRecord
from gateway.ledger.store import LedgerBatchLike, Row
from gateway.settings import LedgerSettings

log = logging.getLogger("nometer.recorder")

_HEADER = struct.Struct("<Q")
_FRAME = struct.Struct("<II")
ROWS, INTAKE = ".rows", ".intake"


class SpoolFull(Exception):
    """An append would take the spool past ``ledger.spool_max_bytes``."""


def spool_dir(settings: LedgerSettings) -> Path:
    if settings.spool_dir:
        return Path(settings.spool_dir)
    return Path(settings.path).resolve().parent / "spool"


class SpoolFile:
    """One append-only spool file, held (flock) by this process. Thread-safe."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live owner
        except OSError:
            os.close(self._fd)
            raise
        self._lock = threading.Lock()
        self.frames = 0  # pending (unconsumed) frames
        self._start, self._end = self._scan()

    def _scan(self) -> tuple[int, int]:
        size = os.fstat(self._fd).st_size
        if size < _HEADER.size:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, _HEADER.pack(_HEADER.size), 0)
            return _HEADER.size, _HEADER.size
        (start,) = _HEADER.unpack(os.pread(self._fd, _HEADER.size, 0))
        start = max(_HEADER.size, min(start, size))
        pos = start
        while pos + _FRAME.size <= size:
            length, crc = _FRAME.unpack(os.pread(self._fd, _FRAME.size, pos))
            payload = os.pread(self._fd, length, pos + _FRAME.size)
            if len(payload) != length or zlib.crc32(payload) != crc:
                break
            pos += _FRAME.size + length
            self.frames += 1
        if pos != size:
            log.warning("spool %s: a torn last frame (%d bytes) cut off", self.path, size - pos)
            os.ftruncate(self._fd, pos)
        return start, pos

    @property
    def size(self) -> int:
        return self._end

    @property
    def pending_bytes(self) -> int:
        return self._end - self._start

    def append(self, payloads: list[bytes]) -> None:
        data = b"".join(_FRAME.pack(len(p), zlib.crc32(p)) + p for p in payloads)
        with self._lock:
            os.pwrite(self._fd, data, self._end)
            os.fsync(self._fd)
            self._end += len(data)
            self.frames += len(payloads)

    def peek(self, n: int) -> tuple[list[bytes], int]:
        """Up to ``n`` pending payloads and the offset after them (for ``consume``)."""
        out: list[bytes] = []
        with self._lock:
            pos = self._start
            while len(out) < n and pos < self._end:
                length, _ = _FRAME.unpack(os.pread(self._fd, _FRAME.size, pos))
                out.append(os.pread(self._fd, length, pos + _FRAME.size))
                pos += _FRAME.size + length
        return out, pos

    def consume(self, count: int, offset: int) -> None:
        with self._lock:
            self.frames -= count
            if offset >= self._end:  # all consumed: reclaim the space
                os.ftruncate(self._fd, _HEADER.size)
                self._start = self._end = _HEADER.size
            else:
                self._start = offset
            os.pwrite(self._fd, _HEADER.pack(self._start), 0)

    def close(self, *, delete: bool = False) -> None:
        with self._lock:
            if self._fd < 0:
                return
            if delete:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)  # releases the flock
            self._fd = -1


def encode_rows(batch: LedgerBatchLike) -> bytes:
    return orjson.dumps({"events": batch.events, "shadows": batch.shadows})


@dataclass
class SpooledBatch:
    """A sealed batch as it comes back from the spool (``LedgerBatchLike``)."""

    events: list[Row] = field(default_factory=list)
    shadows: list[Row] = field(default_factory=list)


def decode_rows(payload: bytes) -> SpooledBatch:
    d = orjson.loads(payload)
    return SpooledBatch([tuple(r) for r in d["events"]], [tuple(r) for r in d["shadows"]])


@dataclass(frozen=True)
class Taken:
    """Entries read from a spool file, consumed only once they are safe elsewhere."""

    file: SpoolFile
    count: int
    offset: int


class Spool:
    """This process's spool files (made on first use) and the orphans of dead processes."""

    def __init__(self, directory: Path, name: str, max_bytes: int):
        self.directory = directory
        self.name = name
        self.max_bytes = max_bytes
        self._own: dict[str, SpoolFile] = {}
        self._orphans: dict[str, list[SpoolFile]] = {ROWS: [], INTAKE: []}
        self._guard = threading.Lock()
        self._inbox: queue.SimpleQueue[RequestRecord | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.inbox = 0  # offered, not yet on disk
        self.refused = 0  # records the intake could not keep (full, or a disk error)
        self.on_intake: Callable[[], Any] | None = None  # called (in the thread) after an append

    # -- files -----------------------------------------------------------------------------------

    def _file(self, kind: str) -> SpoolFile:
        f = self._own.get(kind)
        if f is None:
            with self._guard:
                f = self._own.get(kind)
                if f is None:
                    self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                    f = self._own[kind] = SpoolFile(self.directory / f"{self.name}{kind}")
        return f

    def recover(self) -> int:
        """Take over the files of processes that died (nobody holds their lock): returns how many
        entries they hold. Runs once, when the recorder starts."""
        if not self.directory.is_dir():
            return 0
        found = 0
        for kind in (ROWS, INTAKE):
            for path in sorted(self.directory.glob(f"*{kind}")):
                if path.name == f"{self.name}{kind}":
                    continue
                try:
                    f = SpoolFile(path)
                except BlockingIOError:
                    continue  # a live replica's
                except OSError as exc:
                    log.error("spool file %s cannot be opened: %s", path, exc)
                    continue
                if f.frames == 0:
                    f.close(delete=True)
                    continue
                found += f.frames
                self._orphans[kind].append(f)
                log.warning(
                    "spool %s from an earlier gateway process: %d %s to %s",
                    path,
                    f.frames,
                    "batches" if kind == ROWS else "requests",
                    "replay" if kind == ROWS else "meter",
                )
        return found

    def _sources(self, kind: str) -> list[SpoolFile]:
        own = self._own.get(kind)
        return [*self._orphans[kind], *([own] if own is not None else [])]

    def _first(self, kind: str) -> SpoolFile | None:
        for f in self._sources(kind):
            if f.frames:
                return f
        return None

    def _done(self, f: SpoolFile) -> None:
        for orphans in self._orphans.values():
            if f in orphans and f.frames == 0:
                orphans.remove(f)
                f.close(delete=True)
                log.info("spool %s replayed and removed", f.path)

    def _room(self, n: int) -> None:
        used = sum(f.size for f in self._own.values())
        if used + n > self.max_bytes:
            raise SpoolFull(f"the spool holds {used} bytes of ledger.spool_max_bytes={self.max_bytes}")

    # -- sealed batches -----------------------------------------------------------------------------

    @property
    def rows_pending(self) -> int:
        return sum(f.frames for f in self._sources(ROWS))

    def append_rows(self, batch: LedgerBatchLike) -> None:
        payload = encode_rows(batch)
        self._room(len(payload) + _FRAME.size)
        self._file(ROWS).append([payload])

    def peek_rows(self) -> tuple[SpooledBatch, Taken] | None:
        f = self._first(ROWS)
        if f is None:
            return None
        payloads, offset = f.peek(1)
        return decode_rows(payloads[0]), Taken(f, 1, offset)

    def consume(self, taken: Taken) -> None:
        taken.file.consume(taken.count, taken.offset)
        self._done(taken.file)

    # -- the intake (overflowed requests) -------------------------------------------------------

    @property
    def intake_pending(self) -> int:
        return sum(f.frames for f in self._sources(INTAKE))

    def offer(self, rec: RequestRecord) -> bool:
        """Keep a request the queue had no room for (never blocks; False: refused, it is lost)."""
        if self._closed:
            return False
        if self._thread is None:
            self._thread = threading.Thread(target=self._intake_loop, name="nometer-spool", daemon=True)
            self._thread.start()
        self.inbox += 1
        self._inbox.put(rec)
        return True

    def _intake_loop(self) -> None:
        while True:
            item = self._inbox.get()
            batch = [item]
            while len(batch) < 1000:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            recs = [r for r in batch if r is not None]
            if recs:
                self._keep(recs)
            if None in batch:
                return

    def _keep(self, recs: list[RequestRecord]) -> None:
        try:
            payloads = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in recs]
            self._room(sum(len(p) + _FRAME.size for p in payloads))
            self._file(INTAKE).append(payloads)
        except Exception as exc:
            self.refused += len(recs)
            log.error(
                "LEDGER SPOOL FULL OR FAILING (%s): %d usage events LOST (%d so far)",
                exc,
                len(recs),
                self.refused,
            )
        finally:
            self.inbox -= len(recs)
        if self.on_intake is not None:
            self.on_intake()

    def take_intake(self, n: int) -> tuple[list[RequestRecord], Taken] | None:
        f = self._first(INTAKE)
        if f is None:
            return None
        payloads, offset = f.peek(n)
        recs: list[RequestRecord] = []
        for p in payloads:
            try:
                recs.append(pickle.loads(p))  # our own file, mode 0600 (SECURITY.md)
            except Exception:
                log.exception("a spooled request in %s cannot be read; it is lost", f.path)
        return recs, Taken(f, len(payloads), offset)

    def close_intake(self) -> None:
        """Stop taking requests; what was offered is on disk when this returns."""
        self._closed = True
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join()
            self._thread = None

    # -- state ---------------------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        files = [*self._own.values(), *self._orphans[ROWS], *self._orphans[INTAKE]]
        return sum(f.pending_bytes for f in files)

    def close(self) -> None:
        self.close_intake()
        for f in [*self._own.values(), *self._orphans[ROWS], *self._orphans[INTAKE]]:
            f.close(delete=f.frames == 0)
        self._own.clear()
