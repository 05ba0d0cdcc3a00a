"""Hosted models (OpenAI, Anthropic, Gemini, Azure, Bedrock, ...) through litellm.

The only module that imports litellm, and only when first used (``load``): a gateway with no
fallback configured never imports it. Before that import, litellm is told to use its bundled cost
map and never to fetch anything (``LITELLM_LOCAL_MODEL_COST_MAP``, ``LITELLM_OFFLINE_MODE``).

Requests go in as OpenAI chat bodies and come out as OpenAI-shaped dicts (a ``chat.completion``,
or ``chat.completion.chunk`` events), whatever the provider; litellm-only fields are removed.
Streams always ask for usage. litellm's exceptions (subclasses of the openai SDK's) are
translated here into the adapters' own tree, by class; nothing above this module sees them.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.base import UpstreamConnectError, UpstreamError, UpstreamTimeout

log = logging.getLogger("nometer.hosted")
_litellm: Any = None
_lock = threading.Lock()
_KEEP_USAGE = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
)
_DROP = ("provider_specific_fields",)

# The only client fields a hosted call may carry: OpenAI's chat-completion request parameters
# (https://platform.openai.com/docs/api-reference/chat/create). Everything else in a client body
# is dropped, above all what litellm would read as its own argument: a URL (`base_url`,
# `api_base`), credentials (`api_key`), headers (`headers`, `extra_headers`), canned answers
# (`mock_response`), routing (`custom_llm_provider`) or pass-through bodies (`extra_body`).
# Those would let a caller send the provider's key to a host of its choosing (SSRF).
# `model`, `stream` and `stream_options` are set by the gateway itself.
CLIENT_FIELDS = frozenset(
    {
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)


class HostedError(UpstreamError):
    """The provider answered with an error status (before any output)."""

    def __init__(self, message: str, status: int | None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HostedTarget:
    model: str  # litellm name, e.g. "anthropic/claude-haiku-4-5"
    api_base: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    timeout_s: float = 600.0
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0] if "/" in self.model else "openai"


def load() -> Any:
    """Import and configure litellm once (about a second: call it off the event loop)."""
    global _litellm
    with _lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
            os.environ.setdefault("LITELLM_TELEMETRY", "False")
            import litellm

            # pydantic's notice about litellm's own TypedDicts, once per process: noise, not ours
            warnings.filterwarnings(
                "ignore", message=r"Items? .* (is|are) using the `ReadOnly` qualifier", category=UserWarning
            )
            litellm.suppress_debug_info = True
            litellm.drop_params = True  # a parameter the provider lacks is dropped, not an error
            litellm.telemetry = False
            _litellm = litellm
    return _litellm


def is_loaded() -> bool:
    return _litellm is not None


def _kwargs(target: HostedTarget, payload: Mapping[str, Any], stream: bool) -> dict[str, Any]:
    """litellm's arguments: the allowed client fields, then the operator's (config) parameters,
    then what the gateway decides. Nothing a client sends can set a URL, key or header."""
    kw = {k: v for k, v in payload.items() if k in CLIENT_FIELDS}
    kw.update(target.params)
    kw.update(model=target.model, timeout=target.timeout_s, max_retries=0, num_retries=0, stream=stream)
    if stream:
        kw["stream_options"] = {"include_usage": True}
    for name in ("api_base", "api_key", "api_version"):
        value = getattr(target, name)
        if value is not None:
            kw[name] = value
    return kw


def _translate(exc: Exception, target: HostedTarget) -> UpstreamError:
    import openai  # litellm's exceptions subclass the openai SDK's

    msg = f"{target.model}: {exc}"
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout(msg)
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamConnectError(msg)
    if isinstance(exc, openai.APIStatusError):
        return HostedError(msg, exc.status_code)
    return HostedError(msg, None)


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if k not in _DROP and v is not None}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def openai_shape(response: Any) -> dict[str, Any]:
    """A litellm ModelResponse(Stream) as the dict OpenAI would have sent."""
    data: dict[str, Any] = _clean(response.model_dump())
    usage = data.get("usage")
    if isinstance(usage, dict):
        data["usage"] = {k: usage[k] for k in _KEEP_USAGE if k in usage}
    return data


class HostedStream:
    """Chunks of one streamed answer, the first already received (so a failure to start is
    raised by ``HostedUpstream.stream``, while falling back is still possible)."""

    def __init__(self, wrapper: Any, first: Any, target: HostedTarget):
        self._wrapper = wrapper
        self._first = first
        self._target = target

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        if self._first is not None:
            first, self._first = self._first, None
            yield openai_shape(first)
        try:
            async for chunk in self._wrapper:
                yield openai_shape(chunk)
        except Exception as exc:
            raise _translate(exc, self._target) from exc

    async def aclose(self) -> None:
        """Close the provider connection (the client left, or the stream ended)."""
        try:
            await self._wrapper.aclose()
        except Exception as exc:
            log.debug("closing %s stream: %s", self._target.model, exc)


class HostedUpstream:
    name = "hosted"

    async def complete(self, target: HostedTarget, payload: Mapping[str, Any]) -> dict[str, Any]:
        litellm = load()
        try:
            response = await litellm.acompletion(**_kwargs(target, payload, stream=False))
        except Exception as exc:
            raise _translate(exc, target) from exc
        return openai_shape(response)

    async def stream(self, target: HostedTarget, payload: Mapping[str, Any]) -> HostedStream:
        litellm = load()
        wrapper = None
        try:
            wrapper = await litellm.acompletion(**_kwargs(target, payload, stream=True))
            first = await wrapper.__anext__()
        except StopAsyncIteration:
            first = None
        except Exception as exc:
            if wrapper is not None:
                await HostedStream(wrapper, None, target).aclose()
            raise _translate(exc, target) from exc
        return HostedStream(wrapper, first, target)
