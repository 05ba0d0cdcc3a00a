"""A fault-injecting TCP proxy on 127.0.0.1, to give a gateway an outage of a shared service
(PostgreSQL, Redis) without touching the service itself.

Modes, switched at any time with ``set_mode``:

=========  ======================================================================================
``pass``    bytes flow both ways
``down``    every open connection is reset and new ones are accepted and reset at once (the
            service crashed, or its port is closed)
``freeze``  open connections stay open but nothing flows; new ones are accepted and hang (the
            service or its network is stuck)
=========  ======================================================================================

Going back to ``pass`` releases frozen connections' buffered bytes (nothing is lost by the
proxy itself); connections reset in ``down`` stay gone. Runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Literal, Self

from tests.support.ports import HOST

Mode = Literal["pass", "down", "freeze"]


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:  # SO_LINGER 0: close() sends a RST, as a dead peer's kernel would
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # the peer closed it meanwhile (fd -1): nothing left to reset
            pass
    writer.close()


class ChaosProxy:
    def __init__(self, target_port: int, target_host: str = HOST):
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.connections = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        started = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            loop.run_until_complete(self._open())
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name=f"chaos-proxy-{self.target[1]}")
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("chaos proxy did not start")
        return self

    async def _open(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for a, b in list(self._pairs):
                _reset(a)
                _reset(b)

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------------------------

    def set_mode(self, mode: Mode) -> None:
        loop = self._loop
        assert loop is not None

        async def switch() -> None:
            assert self._flowing is not None
            self.mode = mode
            if mode == "freeze":
                self._flowing.clear()
            else:
                self._flowing.set()
            if mode == "down":
                for a, b in list(self._pairs):
                    _reset(a)
                    _reset(b)
                self._pairs.clear()

        asyncio.run_coroutine_threadsafe(switch(), loop).result(10)

    def _down(self) -> bool:
        return self.mode == "down"

    # -- relaying ------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._down():
            _reset(writer)
            return
        assert self._flowing is not None
        await self._flowing.wait()  # frozen: the connection hangs before it reaches the service
        if self._down():
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                if not w.is_closing():
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()
