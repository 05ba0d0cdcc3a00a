"""A vLLM look-alike on a port of the test's choosing: ``/health`` 200, ``/v1/models`` listing its
served names, and a fixed chat answer; it records every path it was asked for.

It stands in for "some other server already on the managed vLLM's port" (in a thread), and, run
as a script with vLLM's own flags, for a managed vLLM that nometer itself started:

    python -m tests.support.lookalike --port 8011 --served-model-name tiny [any other vLLM flags]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from tests.support.ports import HOST


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path == "/v1/models":
            self._send({"object": "list", "data": [{"id": n, "object": "model"} for n in self.server.names]})
        else:
            self._send({})

    def do_POST(self) -> None:
        self.server.paths.append(self.path)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._send(
            {
                "id": "chatcmpl-lookalike",
                "object": "chat.completion",
                "model": self.server.names[0],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.server.answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, names: list[str], answer: str):
        super().__init__((HOST, port), _Handler)
        self.names = names
        self.answer = answer
        self.paths: list[str] = []


class Lookalike:
    """``with Lookalike(port, ["tiny"]) as server:``; ``server.paths`` says what it was asked."""

    def __init__(self, port: int, names: list[str], answer: str = "from the look-alike"):
        self._server = _Server(port, names, answer)
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name=f"lookalike-{port}"
        )

    @property
    def paths(self) -> list[str]:
        return self._server.paths

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--served-model-name", default="lookalike")
    args, _ = p.parse_known_args(argv)
    server = _Server(args.port, [args.served_model_name], "from the managed look-alike")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
