"""The one retry layer: transient failures only, exponential backoff with jitter, bounded.

Retried: ``TransientError`` (429, 408, 5xx, timeouts, connection errors). A server's
Retry-After is a floor under the backoff, and pauses the labeler's other requests too. Every
other error fails at once. Nothing below this layer retries (litellm runs with
``num_retries=0``), so ``max_attempts`` is exactly the most requests one call can make.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from llmlabel.labelers.completion import Completer, Completion, CompletionRequest, TransientError
from llmlabel.labelers.limits import Limits

OnFailure = Callable[[CompletionRequest, Exception, float], None]


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base·2^(attempt-1))]."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def _delay(attempt: int, exc: BaseException | None) -> float:
    """The pause after failed attempt number ``attempt``: backoff, or the server's Retry-After if longer."""
    delay = backoff(attempt)
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        delay = max(delay, exc.retry_after)
    return delay


def estimate_tokens(request: CompletionRequest) -> int:
    chars = sum(len(m.get("content") or "") for m in request.messages)
    return chars // 4 + int(request.params.get("max_tokens") or 256)


async def call_with_retries(
    completer: Completer,
    request: CompletionRequest,
    *,
    limits: Limits,
    max_attempts: int,
    on_failure: OnFailure | None = None,
) -> tuple[Completion, int]:
    """The completion and the number of attempts it took; raises the last error when out of
    attempts (``TransientError``) or at once (anything else). Each failed attempt is reported to
    ``on_failure`` (the ledger records it)."""
    estimate = estimate_tokens(request)

    async def attempt() -> Completion:
        await limits.admit(estimate)
        started = time.perf_counter()
        try:
            result = await completer(request)
        except Exception as exc:
            if isinstance(exc, TransientError) and exc.retry_after:
                limits.pause(exc.retry_after)
            if on_failure is not None:
                on_failure(request, exc, (time.perf_counter() - started) * 1000.0)
            raise
        limits.settle(estimate, result.prompt_tokens + result.completion_tokens)
        return result

    # The first attempt runs bare: most calls succeed, and tenacity's machinery costs about as
    # much CPU per call as everything else llmlabel adds. Only a transient failure enters it.
    try:
        return await attempt(), 1
    except TransientError as exc:
        if max_attempts <= 1:
            raise
        await asyncio.sleep(_delay(1, exc))
    attempts = 1
    async for retry in AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(max_attempts - 1),
        wait=lambda state: _delay(state.attempt_number + 1, state.outcome.exception() if state.outcome else None),
        reraise=True,
    ):
        with retry:
            attempts += 1
            result = await attempt()
    return result, attempts
