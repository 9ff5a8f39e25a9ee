"""What the fake server answers: a ``Reply`` and the small constructors that build one.

A ``Reply`` is plain data, so a script can be written in Python or in JSON (``reply_from_dict``)
for the subprocess mode. One reply describes one HTTP exchange:

- a completion (``content`` or per-choice ``choices``, ``finish_reason``, optional ``refusal``
  field, optional ``token_probs`` that shape the logprobs of one token, e.g. the label);
- an HTTP error (``status`` ≠ 200, optional ``retry_after``);
- a hang (``hang`` seconds, ``math.inf`` = until the client leaves or the server stops);
- a connection reset (``reset``: the socket is closed with RST, no response at all).

``latency`` is slept (asynchronously) before any of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_REFUSAL = "I'm sorry, I can't help with that."
"""The refusal text ``refusal()`` answers with by default."""

_ERROR_KINDS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request", "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "forbidden", "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout", "timeout", "Request timed out."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", "server_error", "The server had an error processing your request."),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded."),
    504: ("server_error", "gateway_timeout", "Gateway timeout."),
}


def error_kind(status: int) -> tuple[str, str, str]:
    """OpenAI-style ``(type, code, default message)`` for an HTTP error status."""
    if status in _ERROR_KINDS:
        return _ERROR_KINDS[status]
    family = "server_error" if status >= 500 else "invalid_request_error"
    return (family, f"http_{status}", f"HTTP {status}.")


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted HTTP exchange; build it with the functions below rather than by hand."""

    content: str | None = ""
    choices: tuple[str, ...] = ()
    finish_reason: str = "stop"
    refusal: str | None = None
    token_probs: Mapping[str, float] | None = None
    latency: float = 0.0
    status: int = 200
    message: str | None = None
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: float | None = None
    reset: bool = False

    def __post_init__(self) -> None:
        if self.latency < 0 or math.isnan(self.latency):
            raise ValueError(f"reply latency must be >= 0 seconds, got {self.latency!r}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"reply status must be an HTTP status 100..599, got {self.status!r}")
        if self.hang is not None and (self.hang < 0 or math.isnan(self.hang)):
            raise ValueError(f"reply hang must be >= 0 seconds or math.inf, got {self.hang!r}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must be >= 0 seconds, got {self.retry_after!r}")
        if self.token_probs is not None:
            _check_probs(self.token_probs)

    @property
    def kind(self) -> str:
        """``"completion"``, ``"error"``, ``"hang"`` or ``"reset"``."""
        if self.reset:
            return "reset"
        if self.hang is not None:
            return "hang"
        return "completion" if self.status == 200 else "error"

    def with_latency(self, seconds: float) -> Reply:
        """The same reply, answered after ``seconds``."""
        return replace(self, latency=seconds)

    def with_probs(self, token_probs: Mapping[str, float]) -> Reply:
        """The same reply, with ``token_probs`` shaping the logprobs of the matching token."""
        return replace(self, token_probs=dict(token_probs))

    def contents(self, n: int) -> list[str | None]:
        """The content of each of ``n`` choices (``choices`` is cycled when shorter than n)."""
        if self.choices:
            return [self.choices[i % len(self.choices)] for i in range(n)]
        return [self.content] * n


def _check_probs(probs: Mapping[str, float]) -> None:
    if not probs:
        raise ValueError("token_probs must name at least one token")
    for token, p in probs.items():
        if not isinstance(token, str) or not token:
            raise ValueError(f"token_probs keys must be non-empty strings, got {token!r}")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"token_probs[{token!r}] must be in (0, 1], got {p!r}")
    total = sum(probs.values())
    if total > 1.0 + 1e-6:
        raise ValueError(f"token_probs must sum to at most 1, got {total:.4f}: {dict(probs)}")


def _dump(obj: Any) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)


def answer(
    obj: Any,
    *,
    probs: Mapping[str, float] | None = None,
    latency: float = 0.0,
) -> Reply:
    """A completion whose content is ``json.dumps(obj)``; ``probs`` e.g. ``{"positive": 0.7}``."""
    return Reply(content=_dump(obj), token_probs=probs, latency=latency)


def choices(
    *items: Any,
    probs: Mapping[str, float] | None = None,
    latency: float = 0.0,
) -> Reply:
    """One content per choice (dicts are JSON-dumped), cycled when the request's n is larger."""
    if not items:
        raise ValueError("choices() needs at least one item")
    return Reply(choices=tuple(_dump(i) for i in items), token_probs=probs, latency=latency)


def text(
    content: str,
    *,
    finish_reason: str = "stop",
    probs: Mapping[str, float] | None = None,
    latency: float = 0.0,
) -> Reply:
    """A completion with this exact content: prose, malformed JSON, anything."""
    return Reply(content=content, finish_reason=finish_reason, token_probs=probs, latency=latency)


def refusal(message: str = DEFAULT_REFUSAL, *, as_field: bool = False) -> Reply:
    """The model declines: as the content, or (``as_field``) as ``message.refusal`` with null
    content, the way OpenAI structured outputs report it."""
    if as_field:
        return Reply(content=None, refusal=message)
    return Reply(content=message)


def truncated(content: Any, *, keep: float = 0.5) -> Reply:
    """The first ``keep`` fraction of the (JSON-dumped) content, ``finish_reason="length"``."""
    if not 0.0 <= keep < 1.0:
        raise ValueError(f"truncated(keep=...) must be in [0, 1), got {keep!r}")
    full = _dump(content)
    return Reply(content=full[: int(len(full) * keep)], finish_reason="length")


def error(
    status: int,
    message: str | None = None,
    *,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    latency: float = 0.0,
) -> Reply:
    """An HTTP error with an OpenAI-style ``{"error": {...}}`` body (400, 401, 429, 500, 503…)."""
    if status == 200:
        raise ValueError("error() needs a non-200 status; use answer() or text() for success")
    return Reply(
        content=None,
        status=status,
        message=message,
        retry_after=retry_after,
        headers=dict(headers or {}),
        latency=latency,
    )


def rate_limited(retry_after: float | None = 1.0, message: str | None = None) -> Reply:
    """HTTP 429 with a ``Retry-After`` header (seconds; also ``retry-after-ms``)."""
    return error(429, message, retry_after=retry_after)


def timeout(seconds: float = math.inf) -> Reply:
    """Hold the connection without answering for ``seconds`` (default: until the client gives
    up or the server stops), then drop it. Pair it with a shorter client timeout."""
    return Reply(content=None, hang=seconds)


def reset() -> Reply:
    """Close the connection with a TCP RST right after reading the request: no response bytes."""
    return Reply(content=None, reset=True)


_REPLY_KEYS = {
    "json",
    "text",
    "choices",
    "finish_reason",
    "refusal",
    "probs",
    "latency",
    "error",
    "status",
    "message",
    "retry_after",
    "headers",
    "timeout",
    "reset",
    "as_field",
}


def reply_from_dict(data: Mapping[str, Any]) -> Reply:
    """A ``Reply`` from its JSON form (used by scripts for the subprocess mode).

    ``{"json": {...}}``, ``{"text": "...", "finish_reason": "length"}``, ``{"choices": [...]}``,
    ``{"refusal": "..."}``, ``{"error": 429, "retry_after": 1}``, ``{"timeout": 5}`` (``null``
    = forever), ``{"reset": true}``; ``latency`` and ``probs`` go with any of them.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a reply must be a JSON object, got {data!r}")
    unknown = sorted(set(data) - _REPLY_KEYS)
    if unknown:
        raise ValueError(
            f"unknown reply key(s) {unknown} in {dict(data)}; known: {sorted(_REPLY_KEYS)}"
        )
    latency = float(data.get("latency", 0.0))
    probs = data.get("probs")
    status = data.get("error", data.get("status"))
    if data.get("reset"):
        reply = reset()
    elif "timeout" in data:
        seconds = data["timeout"]
        reply = timeout(math.inf if seconds is None else float(seconds))
    elif status is not None and int(status) != 200:
        retry_after = data.get("retry_after")
        reply = error(
            int(status),
            data.get("message"),
            retry_after=None if retry_after is None else float(retry_after),
            headers=data.get("headers"),
        )
    elif "choices" in data:
        reply = choices(*data["choices"])
    elif "json" in data:
        reply = answer(data["json"])
    elif "text" in data:
        reply = text(str(data["text"]))
    elif "refusal" in data:
        reply = refusal(str(data["refusal"]), as_field=bool(data.get("as_field", False)))
    else:
        raise ValueError(
            f"reply {dict(data)} says nothing to answer: give one of json, text, choices, "
            "refusal, error, timeout, reset"
        )
    if reply.kind == "completion" and "finish_reason" in data:
        reply = replace(reply, finish_reason=str(data["finish_reason"]))
    if probs is not None:
        reply = reply.with_probs(probs)
    return reply.with_latency(latency) if latency else reply


def replies_from_list(items: Sequence[Mapping[str, Any]]) -> list[Reply]:
    """``reply_from_dict`` over a list, naming the position of a bad entry."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(reply_from_dict(item))
        except ValueError as exc:
            raise ValueError(f"reply #{i}: {exc}") from None
    return out
