"""The OpenAI chat-completions wire format, as much of it as clients of a labeler look at.

``ChatRequest`` is one received request (and its record); ``completion_body`` and
``error_body`` build the JSON the server sends back. Tokens are counted by whitespace and
content is split into deterministic JSON-ish tokens (``tokenize``), so a label value such as
``positive`` in ``{"label": "positive"}`` is one token that can carry scripted alternatives.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from llmlabel.testing.replies import Reply, error_kind


@dataclass(eq=False)
class ChatRequest:
    """One request the server received; given to responders and kept in ``server.requests``.

    ``attempt`` counts how often this exact body has arrived (1 for the first time), so a retry
    of the same request is recognizable. ``status`` and ``outcome`` (``"response"``,
    ``"hang"``, ``"reset"``) are filled in once the server has answered.
    """

    index: int
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    received_at: float
    received_at_wall: float
    attempt: int = 1
    status: int | None = None
    outcome: str | None = None
    answered_at: float | None = None
    reply: Reply | None = field(default=None, repr=False)

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.body.get("messages") if isinstance(self.body, dict) else None
        return msgs if isinstance(msgs, list) else []

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def n(self) -> int:
        value = self.body.get("n") if isinstance(self.body, dict) else None
        return value if isinstance(value, int) and value >= 1 else 1

    @property
    def wants_logprobs(self) -> bool:
        return bool(isinstance(self.body, dict) and self.body.get("logprobs"))

    @property
    def top_logprobs(self) -> int:
        value = self.body.get("top_logprobs") if isinstance(self.body, dict) else None
        return value if isinstance(value, int) and value >= 0 else 0

    @property
    def response_format(self) -> dict[str, Any] | None:
        value = self.body.get("response_format") if isinstance(self.body, dict) else None
        return value if isinstance(value, dict) else None

    @cached_property
    def last_user_message(self) -> str:
        """Text of the last ``user`` message ("" if none)."""
        for msg in reversed(self.messages):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return message_text(msg)
        return ""

    @property
    def prompt_text(self) -> str:
        """All message texts joined by newlines."""
        return "\n".join(message_text(m) for m in self.messages if isinstance(m, dict))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (for the subprocess mode's ``/_fake/stats``)."""
        return {
            "index": self.index,
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "received_at": self.received_at_wall,
            "attempt": self.attempt,
            "status": self.status,
            "outcome": self.outcome,
        }


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message whose content is a string or a list of ``{"type": "text"}`` parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def count_tokens(text: str | None) -> int:
    """Rough token count: whitespace-separated words."""
    return len(text.split()) if text else 0


_GENERIC = r"\w+|\s+|[^\w\s]"


def tokenize(content: str, atoms: Mapping[str, float] | None = None) -> list[str]:
    """Split content into tokens that concatenate back to it: words, whitespace runs, single
    punctuation. Keys of ``atoms`` (e.g. multi-word labels) stay whole tokens."""
    pattern = _GENERIC
    if atoms:
        keys = sorted(atoms, key=len, reverse=True)
        pattern = r"(?<!\w)(?:" + "|".join(re.escape(k) for k in keys) + r")(?!\w)|" + _GENERIC
    return re.findall(pattern, content, flags=re.DOTALL)


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def logprobs_content(
    content: str, token_probs: Mapping[str, float] | None, top: int
) -> list[dict[str, Any]]:
    """``choices[i].logprobs.content`` for ``content``.

    Every token has logprob 0 (certain) except the first token equal to a key of
    ``token_probs``: it gets ``log p`` and ``top_logprobs`` lists the most probable keys.
    """
    out: list[dict[str, Any]] = []
    shaped = False
    ranked = sorted((token_probs or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    for token in tokenize(content, token_probs):
        if not shaped and token_probs and token in token_probs:
            shaped = True
            entry = _entry(token, math.log(token_probs[token]))
            entry["top_logprobs"] = [_entry(t, math.log(p)) for t, p in ranked[:top]]
        else:
            entry = _entry(token, 0.0)
            entry["top_logprobs"] = [_entry(token, 0.0)][:top]
        out.append(entry)
    return out


def completion_body(request: ChatRequest, reply: Reply, *, default_model: str) -> dict[str, Any]:
    """The JSON body of a successful ``chat.completion`` for ``request`` answered by ``reply``."""
    items = []
    completion_tokens = 0
    for i, content in enumerate(reply.contents(request.n)):
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reply.refusal is not None:
            message["refusal"] = reply.refusal
        logprobs = None
        if request.wants_logprobs:
            logprobs = {
                "content": logprobs_content(content or "", reply.token_probs, request.top_logprobs),
                "refusal": None,
            }
        completion_tokens += count_tokens(content) + count_tokens(reply.refusal)
        items.append(
            {
                "index": i,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": reply.finish_reason,
            }
        )
    prompt_tokens = count_tokens(request.prompt_text)
    return {
        "id": f"chatcmpl-fake-{request.index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model or default_model,
        "system_fingerprint": "fp_llmlabel_fake",
        "choices": items,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """OpenAI-style error body ``{"error": {"message", "type", "param", "code"}}``."""
    kind, code, default = error_kind(status)
    return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}


def models_body(model: str) -> dict[str, Any]:
    """The body of ``GET /v1/models``: one model."""
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 0, "owned_by": "llmlabel-testing"}],
    }
