"""What the fake upstream answers: OpenAI-shaped bodies and stream chunks, shaped like vLLM's.

Pure functions, no I/O. A "token" here is one whitespace-separated word of the prompt, and one
content chunk of the answer, so usage numbers are easy to predict in tests. A request with ``n``
gets ``n`` identical choices, and its completion tokens count every choice (as providers bill).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from typing import Any

import orjson

FAKE_MODEL = "fake-model"

Json = dict[str, Any]


def sse(payload: Json | str) -> bytes:
    """One server-sent event; a str payload is sent verbatim (``[DONE]``)."""
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def error_body(status: int, message: str, err_type: str, code: str | int | None = None) -> Json:
    return {
        "error": {
            "message": message,
            "type": err_type,
            "param": None,
            "code": status if code is None else code,
        }
    }


def count_words(value: Any) -> int:
    """Prompt "tokens": words in every string inside ``value`` (contents, prompt, input)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(v) for v in value)
    if isinstance(value, dict):
        return sum(count_words(v) for v in value.values())
    return 0


def usage(prompt_tokens: int, completion_tokens: int) -> Json:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def word(i: int) -> str:
    return f" w{i}"


class Completion:
    """One chat or text completion being answered: ids, token counts, chunks."""

    def __init__(self, body: Json, *, chat: bool, n_tokens: int, finish_reason: str) -> None:
        self.chat = chat
        self.model = str(body.get("model", FAKE_MODEL))
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        self.created = int(time.time())
        self.n_tokens = n_tokens
        n = body.get("n")
        self.choices = n if isinstance(n, int) and n > 1 else 1
        self.finish_reason = finish_reason
        prompt = (
            [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)]
            if chat
            else body.get("prompt")
        )
        self.prompt_tokens = max(1, count_words(prompt))
        options = body.get("stream_options") or {}
        self.include_usage = bool(isinstance(options, dict) and options.get("include_usage"))

    @property
    def usage(self) -> Json:
        return usage(self.prompt_tokens, self.n_tokens * self.choices)

    def _envelope(self, choices: list[Json], *, chunk: bool) -> Json:
        kind = ("chat.completion" if self.chat else "text_completion") + (
            ".chunk" if chunk and self.chat else ""
        )
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def full(self) -> Json:
        text = "".join(word(i) for i in range(self.n_tokens))
        choices: list[Json] = []
        for index in range(self.choices):
            choice: Json = {"index": index, "finish_reason": self.finish_reason, "logprobs": None}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choices.append(choice)
        return {**self._envelope(choices, chunk=False), "usage": self.usage}

    def first_chunk(self) -> Json | None:
        """vLLM opens a chat stream with an empty assistant delta; text streams have none."""
        if not self.chat:
            return None
        return self._envelope(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            chunk=True,
        )

    def chunk(self, i: int) -> Json:
        """Content chunk ``i``; like vLLM, the last one carries the finish reason."""
        last = i == self.n_tokens - 1
        choices: list[Json] = []
        for index in range(self.choices):
            choice: Json = {
                "index": index,
                "logprobs": None,
                "finish_reason": self.finish_reason if last else None,
            }
            if self.chat:
                choice["delta"] = {"content": word(i)}
            else:
                choice["text"] = word(i)
            choices.append(choice)
        return self._envelope(choices, chunk=True)

    def usage_chunk(self) -> Json:
        """The usage-only chunk vLLM sends last when ``stream_options.include_usage`` is set."""
        return {**self._envelope([], chunk=True), "usage": self.usage}


def _embedding_inputs(raw: Any) -> list[Any]:
    """OpenAI's ``input``: a string, a token array, or a list of either."""
    if isinstance(raw, list) and raw and not isinstance(raw[0], int):
        return raw
    return [raw]


def _input_tokens(item: Any) -> int:
    return len(item) if isinstance(item, list) else count_words(item)


def embeddings(body: Json, dim: int) -> Json:
    """Deterministic vectors (from a hash of each input), float or base64 like OpenAI's."""
    inputs = _embedding_inputs(body.get("input", ""))
    as_base64 = body.get("encoding_format") == "base64"  # what the openai SDK asks for
    data = []
    for index, item in enumerate(inputs):
        seed = hashlib.sha256(orjson.dumps(item)).digest()
        vector = [(seed[i % len(seed)] - 127.5) / 127.5 for i in range(dim)]
        embedding: list[float] | str = (
            base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    prompt_tokens = max(1, sum(_input_tokens(item) for item in inputs))
    return {
        "object": "list",
        "model": str(body.get("model", FAKE_MODEL)),
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
