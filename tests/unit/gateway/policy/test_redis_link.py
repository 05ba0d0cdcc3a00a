"""gateway/policy/redis_link.py: every way a Redis command can fail is CountersUnavailable."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway import errors
from gateway.policy.redis_link import RedisLink


def fail_with(exc: BaseException) -> None:
    link = RedisLink("redis://127.0.0.1:1/0", retry_s=60)  # never connected: the command is ours

    async def command() -> int:
        raise exc

    async def go() -> None:
        with pytest.raises(errors.CountersUnavailable):
            await link.call("rate-limit check", command)
        with pytest.raises(errors.CountersUnavailable):  # within the retry period: at once
            await link.call("rate-limit check", command)

    asyncio.run(go())


@pytest.mark.parametrize(
    "exc",
    [
        RedisConnectionError("Error while reading from 127.0.0.1:6379 : (104, 'Connection reset by peer')"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        # a connection reset mid-command, as asyncio reports it (bench/soak.py found it as a 500)
        RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed"),
    ],
)
def test_a_failed_command_is_counters_unavailable(exc: BaseException) -> None:
    fail_with(exc)


def test_a_bug_of_ours_is_not_taken_for_an_outage() -> None:
    with pytest.raises(ZeroDivisionError):
        fail_with(ZeroDivisionError())
