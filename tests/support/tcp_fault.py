"""A fault-injecting TCP proxy on 127.0.0.1, in front of a real service (Redis, PostgreSQL).

Outage tests point the gateway at the proxy instead of the shared service and break the proxy,
never the service (other engineers' tests use it at the same time):

=============  ===================================================================================
``restore()``  forward bytes both ways (the start state)
``down()``     the service is gone: the listener closes (a connect is refused) and every open
               connection is reset
``frozen()``   the service hangs: connections are accepted and read, but nothing is forwarded and
               nothing ever comes back; open connections go silent too
=============  ===================================================================================

A connection that lost bytes while frozen is out of step with its protocol, so ``restore()``
resets it (a client sees what it would after a real hang: its connection dies, a new one works).
The proxy runs its own event loop in a daemon thread, like ``FakeUpstream``.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Literal, Self

from tests.support.ports import HOST, free_port

Mode = Literal["pass", "down", "frozen"]
_CHUNK = 65536


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tainted: bool = False  # bytes were swallowed while frozen

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode: Mode = "pass"
        self.accepted = 0  # connections accepted since start
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"fault-{self.port}")

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        self._run(self._listen())
        return self

    def stop(self) -> None:
        self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://{HOST}:{self.port}{path}"

    # -- faults -------------------------------------------------------------------------------

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        self.mode = "down"
        self._run(self._close_all(listener=True))

    def frozen(self) -> None:
        """Accept and read, never answer (open connections included)."""
        self.mode = "frozen"
        self._run(self._listen())

    def restore(self) -> None:
        """Forward again; connections that lost bytes while frozen are reset."""
        self.mode = "pass"
        self._run(self._restore())

    # -- inside the loop ----------------------------------------------------------------------

    def _run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, HOST, self.port, reuse_address=True)

    async def _close_all(self, *, listener: bool) -> None:
        if listener and self._server is not None:
            self._server.close()
            self._server = None
        for c in list(self._conns):
            c.abort()
        self._conns.clear()

    async def _shutdown(self) -> None:
        await self._close_all(listener=True)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _restore(self) -> None:
        for c in [c for c in self._conns if c.tainted or c.upstream is None]:
            c.abort()
            self._conns.discard(c)
        await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            if self.mode == "frozen":
                await self._swallow(reader, conn)
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            conn.upstream = up_writer
            await asyncio.gather(
                self._pipe(reader, up_writer, conn),
                self._pipe(up_reader, writer, conn),
                return_exceptions=True,
            )
        except (OSError, asyncio.CancelledError):  # reset, refused, or the proxy is stopping
            pass
        finally:
            conn.abort()
            self._conns.discard(conn)

    async def _swallow(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        conn.tainted = True
        while await reader.read(_CHUNK):
            pass

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if self.mode == "frozen":
                    conn.tainted = True
                    continue
                writer.write(data)
                await writer.drain()
        finally:
            conn.abort()
