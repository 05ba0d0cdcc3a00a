"""One error tree for everything the gateway itself refuses or fails.

Each class carries the HTTP status, the OpenAI error ``type`` and a stable ``code``; one function
renders the OpenAI envelope ``{"error": {"message", "type", "param", "code"}}`` for all of them.
On the Anthropic routes (``/v1/messages``...) the same error is rendered in Anthropic's envelope
``{"type": "error", "error": {"type", "message"}}``, its ``type`` chosen by status as Anthropic
does (``anthropic_type``). Errors are mapped by class, never by message text. Upstream 4xx/5xx
responses are *not* wrapped: they pass through unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import orjson


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)

    def anthropic_body(self) -> bytes:
        """Anthropic's envelope, for the Anthropic routes (the SDK maps its class from the status)."""
        return orjson.dumps(
            {"type": "error", "error": {"type": anthropic_type(self.status), "message": self.message}}
        )


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class MissingModel(InvalidRequest):
    code = "missing_model"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class RouteNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class NoHealthyBackend(GatewayError):
    status = 503
    type = "service_unavailable_error"
    code = "no_healthy_backend"


class UpstreamUnreachable(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_connection_failed"


class UpstreamTimedOut(GatewayError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class MissingApiKey(AuthenticationFailed):
    code = "missing_api_key"


class CountersUnavailable(GatewayError):
    """The shared counter store (Redis) failed, refused or did not answer within its timeout.

    Raised by ``gateway.policy.redis_link`` in place of the client's own exceptions; the rate
    limiter and the budgets then fail open or closed, as each team's policy says."""

    status = 503
    type = "service_unavailable_error"
    code = "counters_unavailable"


class KeysUnavailable(GatewayError):
    """The gateway could not re-read its API keys for longer than ``auth.keys_max_stale_s``: it
    refuses keys rather than honour one that may have been revoked meanwhile."""

    status = 503
    type = "service_unavailable_error"
    code = "keys_unavailable"


class HostedFailed(GatewayError):
    """Every hosted fallback model failed before the first byte."""

    status = 502
    type = "upstream_error"
    code = "hosted_fallback_failed"


class RequestTimedOut(GatewayError):
    """A request's head, or its body, did not arrive in time (``server.header_timeout_s``, ...)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class UriTooLong(GatewayError):
    status = 414
    type = "invalid_request_error"
    code = "uri_too_long"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_too_large"


class TooManyConnections(GatewayError):
    status = 503
    type = "service_unavailable_error"
    code = "too_many_connections"


class HostNotAllowed(GatewayError):
    """Open mode serves only the Host names it knows (a DNS-rebinding page sends its own)."""

    status = 403
    type = "permission_error"
    code = "host_not_allowed"


class OriginNotAllowed(GatewayError):
    """Open mode refuses requests a browser sent on behalf of another site's page."""

    status = 403
    type = "permission_error"
    code = "origin_not_allowed"


# -- policy refusals: recorded in the ledger (outcome "refused") with the caller's team ----------


class Refusal(GatewayError):
    """Base of refusals decided by team policy, after the caller was identified."""


class ModelNotAllowed(Refusal):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class RateLimited(Refusal):
    status = 429
    type = "requests"  # OpenAI's spelling: "requests" or "tokens"
    code = "rate_limit_exceeded"


class TokenRateLimited(RateLimited):
    type = "tokens"


class BudgetExceeded(Refusal):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class LocalOnlyUnavailable(Refusal):
    """A local_only team's request would have needed a hosted model: refused, never sent."""

    status = 503
    type = "service_unavailable_error"
    code = "local_only_unavailable"


class FallbackUnavailable(Refusal):
    """Fallback was needed and allowed, but no hosted model can take the request (e.g. unpriced)."""

    status = 503
    type = "service_unavailable_error"
    code = "fallback_unavailable"


class LimitsUnavailable(Refusal):
    """The team's rate limits fail closed (``limits.fail: closed``) and their counters are down."""

    status = 503
    type = "service_unavailable_error"
    code = "rate_limits_unavailable"


class BudgetUnavailable(Refusal):
    """The team's hosted budget cannot be checked (its counters are down); budgets fail closed
    by default (``budget.fail``)."""

    status = 503
    type = "service_unavailable_error"
    code = "budget_unavailable"


class CapExceeded(Refusal):
    """A request asks for more than the team's caps allow (``n``, ``max_tokens``: ``caps``)."""

    status = 400
    type = "invalid_request_error"
    code = "cap_exceeded"


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


# Anthropic's error types by status (docs.anthropic.com "Errors"); others are `api_error`.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error")


ANTHROPIC_PREFIX = "/v1/messages"


def is_anthropic(path: str) -> bool:
    """The Anthropic Messages routes (``/v1/messages``, ``/v1/messages/count_tokens``)."""
    return path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/")
