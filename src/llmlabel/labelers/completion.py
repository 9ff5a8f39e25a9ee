"""The one seam to LLM providers: the only module that imports litellm.

Everything else in llmlabel talks to a ``Completer``: an async callable from a
``CompletionRequest`` to a ``Completion`` (plain data). Tests point the same seam at a loopback
server, the local model at llama-cpp-python's server, users at any litellm model string.

Errors leave this module typed, so the single retry layer (``labelers.retry``) can tell a
transient failure (429, 5xx, timeout, connection: ``TransientError``, with the server's
Retry-After) from a permanent one (``PermanentError``: other 4xx, retried never). litellm's and
the OpenAI SDK's own retries are switched off (``num_retries=0``, ``max_retries=0``) so no
layer retries behind our back and the request counts stay exact.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

from llmlabel.config import CostOverride


@dataclass(frozen=True)
class CompletionRequest:
    """What is asked: the messages and every parameter that changes the answer."""

    model: str
    messages: list[dict[str, str]]
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, n, logprobs…
    api_base: str | None = None
    api_key: str | None = None
    timeout: float = 60.0
    # what names the server in the cache when its address does not: a local model is served
    # on a new port each run, but answers the same from the same file
    server_identity: str | None = None

    def identity(self) -> dict[str, Any]:
        """The part that decides the answer (never the key): what the cache hashes."""
        return {"model": self.model, "messages": self.messages, "params": self.params,
                "api_base": self.server_identity or self.api_base}


@dataclass
class Choice:
    content: str | None
    finish_reason: str | None = None
    refusal: str | None = None
    logprobs: list[dict[str, Any]] | None = None  # OpenAI ``logprobs.content`` entries


@dataclass
class Completion:
    """A provider's answer, reduced to what labeling uses; JSON-able via ``to_dict``."""

    choices: list[Choice]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "choices": [c.__dict__ for c in self.choices],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        return cls(
            choices=[Choice(**c) for c in data.get("choices", [])],
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
        )


class Completer(Protocol):
    def __call__(self, request: CompletionRequest) -> Awaitable[Completion]: ...


class TransientError(Exception):
    """Worth retrying: 429, 5xx, timeout, connection. ``retry_after`` in seconds if the server said."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class PermanentError(Exception):
    """Not worth retrying: the request itself is wrong (400, 401, 403, 404, 422…)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@cache
def _litellm() -> Any:
    """Import litellm once, lazily (it takes seconds), never fetching the price map online.

    Then freeze what is alive: litellm's import leaves ~350k long-lived objects (its price
    table, pydantic models, provider configs) that every full garbage collection would walk
    again, ~0.3 s each, 15-20 times in a run of 4,000 calls (a fifth of the run's CPU). Frozen,
    collections walk only what the run allocates. The import leaves no cyclic garbage to keep
    by mistake (a collection right after it frees nothing)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    gc.freeze()
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


def supports_response_schema(model: str) -> bool:
    """Whether the provider enforces a JSON schema natively (litellm's capability table)."""
    try:
        return bool(_litellm().supports_response_schema(model=model))
    except Exception:
        return False


def price(model: str, raw: Any, usage: tuple[int, int], override: CostOverride | None) -> float:
    """USD for one call: the config's override if given, else litellm's price table, else 0."""
    if override is not None:
        pin, pout = usage
        return override.per_call + (pin * override.input_per_million + pout * override.output_per_million) / 1e6
    if raw is None:
        return 0.0
    hidden = getattr(raw, "_hidden_params", None)
    if isinstance(hidden, dict) and "response_cost" in hidden:  # litellm priced it already
        return float(hidden["response_cost"] or 0.0)  # None: a model it has no price for
    try:
        return float(_litellm().completion_cost(completion_response=raw, model=model))
    except Exception:  # a model litellm has no price for (local, private): free unless overridden
        return 0.0


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    except (TypeError, ValueError):  # an HTTP date: rare for LLM APIs; fall back to backoff
        return None
    return None


def classify(exc: Exception) -> Exception:
    """A litellm/OpenAI exception as ``TransientError`` or ``PermanentError``."""
    import openai

    status = getattr(exc, "status_code", None)
    text = f"{type(exc).__name__}: {str(exc)[:500]}"
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError | TimeoutError | ConnectionError):
        return TransientError(text, status=status if isinstance(status, int) else None)
    if isinstance(status, int) and (status == 429 or status == 408 or status >= 500):
        return TransientError(text, status=status, retry_after=_retry_after(exc))
    if isinstance(status, int):
        return PermanentError(text, status=status)
    return TransientError(text)  # unknown transport trouble: bounded retries decide


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _token(entry: Any) -> dict[str, Any]:
    """A logprobs entry (a dict, or litellm's object: read, not dumped) as a plain dict without
    its ``bytes``: never read, and most of what the ledger would store and decode again."""
    if isinstance(entry, dict):
        alternatives = [{"token": _field(a, "token"), "logprob": _field(a, "logprob")}
                        for a in entry.get("top_logprobs") or []]
        return {"token": entry.get("token"), "logprob": entry.get("logprob"), "top_logprobs": alternatives}
    alternatives = [{"token": getattr(a, "token", None), "logprob": getattr(a, "logprob", None)}
                    for a in getattr(entry, "top_logprobs", None) or []]
    return {"token": getattr(entry, "token", None), "logprob": getattr(entry, "logprob", None), "top_logprobs": alternatives}


def _choices(raw: Any) -> list[Choice]:
    out = []
    for ch in raw.choices:
        msg = ch.message
        refusal = getattr(msg, "refusal", None)
        if refusal is None:
            refusal = (getattr(msg, "provider_specific_fields", None) or {}).get("refusal")
        lp = getattr(ch, "logprobs", None)
        content = None
        if lp is not None:
            items = _field(lp, "content")
            if items:
                content = [_token(i) for i in items]
        out.append(Choice(content=msg.content, finish_reason=ch.finish_reason, refusal=refusal, logprobs=content))
    return out


def litellm_completer(cost: CostOverride | None = None) -> Completer:
    """A completer calling ``litellm.acompletion`` once per request: no retries inside."""
    litellm = _litellm()

    async def complete(request: CompletionRequest) -> Completion:
        kwargs: dict[str, Any] = dict(request.params)
        if request.api_base:
            kwargs["api_base"] = request.api_base
        if request.api_key:
            kwargs["api_key"] = request.api_key
        started = time.perf_counter()
        try:
            raw = await litellm.acompletion(
                model=request.model, messages=request.messages, timeout=request.timeout,
                num_retries=0, max_retries=0, **kwargs,
            )
        except Exception as exc:
            raise classify(exc) from exc
        latency = (time.perf_counter() - started) * 1000.0
        usage = getattr(raw, "usage", None)
        pin = int(getattr(usage, "prompt_tokens", 0) or 0)
        pout = int(getattr(usage, "completion_tokens", 0) or 0)
        return Completion(
            choices=_choices(raw), prompt_tokens=pin, completion_tokens=pout,
            cost_usd=price(request.model, raw, (pin, pout), cost), latency_ms=latency,
        )

    return complete
