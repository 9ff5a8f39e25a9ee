"""Responders decide what the fake server answers to each request.

A responder is any callable ``(ChatRequest) -> Reply`` (it may also return a dict, answered as
JSON, or a str, answered verbatim; it may be async). Building blocks:

- ``Script``: replies queued by call order, then rules matched on the last user message, then a
  default;
- ``fail_first(n, then)``: the first ``n`` attempts of each distinct request fail;
- ``faults(then, p=..., seed=...)``: with probability p a request gets 429/500/timeout/reset;
- ``obedient(...)``: answers the label a rule finds in the user message (prompt-injection tests);
- ``responder_from_config``: all of the above from the JSON script of the subprocess mode.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from llmlabel.testing.replies import (
    Reply,
    answer,
    error,
    rate_limited,
    replies_from_list,
    reply_from_dict,
    reset,
    text,
    timeout,
)
from llmlabel.testing.wire import ChatRequest

ReplyLike: TypeAlias = Reply | Mapping[str, Any] | str
Responder: TypeAlias = Callable[[ChatRequest], "ReplyLike | Awaitable[ReplyLike]"]


def to_reply(value: ReplyLike) -> Reply:
    """A ``Reply`` from what a responder returned: a Reply, a dict (JSON answer), a str (text)."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return text(value)
    if isinstance(value, Mapping):
        return answer(dict(value))
    raise TypeError(f"a responder must return a Reply, dict or str, got {type(value).__name__}")


def as_responder(value: Responder | ReplyLike | None) -> Responder:
    """A responder from a responder, or a constant reply (``None``: the text ``"OK"``)."""
    if value is None:
        value = text("OK")
    if callable(value) and not isinstance(value, Reply):
        return value
    constant = to_reply(value)
    return lambda request: constant


@dataclass
class _Rule:
    contains: str | None
    regex: re.Pattern[str] | None
    match: Callable[[ChatRequest], bool] | None
    reply: Responder
    times: int | None

    def matches(self, request: ChatRequest) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        user = request.last_user_message
        if self.contains is not None and self.contains not in user:
            return False
        if self.regex is not None and not self.regex.search(user):
            return False
        return self.match is None or self.match(request)


class Script:
    """Replies by call order, then by rule, then a default.

    >>> script = Script(default=answer({"label": "neutral"}))
    >>> script.queue(error(500), rate_limited(0.2))        # the first two calls, in order
    >>> script.when(contains="great", reply=answer({"label": "positive"}))
    """

    def __init__(self, default: Responder | ReplyLike | None = None) -> None:
        self.default = as_responder(default)
        self._queue: list[Responder] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    def queue(self, *replies: Responder | ReplyLike) -> Script:
        """Answer the next calls (whatever they ask) with these replies, one each, in order."""
        with self._lock:
            self._queue.extend(as_responder(r) for r in replies)
        return self

    def when(
        self,
        contains: str | None = None,
        *,
        regex: str | re.Pattern[str] | None = None,
        match: Callable[[ChatRequest], bool] | None = None,
        reply: Responder | ReplyLike,
        times: int | None = None,
    ) -> Script:
        """Answer calls whose last user message contains ``contains`` / matches ``regex`` /
        passes ``match`` with ``reply`` (at most ``times`` times). First matching rule wins."""
        if contains is None and regex is None and match is None:
            raise ValueError("when() needs contains=, regex= or match= (use default for the rest)")
        pattern = re.compile(regex) if isinstance(regex, str) else regex
        with self._lock:
            self._rules.append(_Rule(contains, pattern, match, as_responder(reply), times))
        return self

    @property
    def pending(self) -> int:
        """How many queued replies are still unused."""
        with self._lock:
            return len(self._queue)

    def __call__(self, request: ChatRequest) -> ReplyLike | Awaitable[ReplyLike]:
        with self._lock:
            if self._queue:
                chosen = self._queue.pop(0)
            else:
                chosen = self.default
                for rule in self._rules:
                    if rule.matches(request):
                        if rule.times is not None:
                            rule.times -= 1
                        chosen = rule.reply
                        break
        return chosen(request)


def fail_first(
    n: int,
    then: Responder | ReplyLike | None = None,
    *,
    failure: Responder | ReplyLike | None = None,
) -> Responder:
    """The first ``n`` attempts of each distinct request body get ``failure`` (default HTTP
    500); later attempts go to ``then``. Requests are told apart by their exact JSON body."""
    if n < 0:
        raise ValueError(f"fail_first(n) needs n >= 0, got {n}")
    fail = as_responder(failure if failure is not None else error(500))
    succeed = as_responder(then)

    def respond(request: ChatRequest) -> ReplyLike | Awaitable[ReplyLike]:
        return fail(request) if request.attempt <= n else succeed(request)

    return respond


FAULT_KINDS = ("429", "500", "timeout", "reset")


def fault_reply(kind: str, *, retry_after: float | None = 0.1, hang: float | None = None) -> Reply:
    """The reply for one fault kind: ``"429"``, ``"500"``, ``"503"``, ``"timeout"``, ``"reset"``
    (or any other HTTP status as a string)."""
    if kind == "timeout":
        return timeout() if hang is None else timeout(hang)
    if kind == "reset":
        return reset()
    if kind == "429":
        return rate_limited(retry_after)
    if kind.isdigit():
        return error(int(kind))
    raise ValueError(f"unknown fault kind {kind!r}; use one of {FAULT_KINDS} or an HTTP status")


def faults(
    then: Responder | ReplyLike | None = None,
    *,
    p: float,
    seed: int = 0,
    kinds: Sequence[str] = FAULT_KINDS,
    retry_after: float | None = 0.1,
    hang: float | None = None,
) -> Responder:
    """With probability ``p`` per request (seeded RNG, in arrival order) answer with one fault
    drawn uniformly from ``kinds``; otherwise ask ``then``. A ``"timeout"`` fault hangs until
    the client gives up (so give the client a timeout) unless ``hang`` seconds are given; a 429
    carries ``retry_after``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"faults(p=...) must be a probability in [0, 1], got {p!r}")
    if not kinds:
        raise ValueError("faults(kinds=...) needs at least one kind")
    fault_replies = [fault_reply(k, retry_after=retry_after, hang=hang) for k in kinds]
    succeed = as_responder(then)
    rng = random.Random(seed)
    lock = threading.Lock()

    def respond(request: ChatRequest) -> ReplyLike | Awaitable[ReplyLike]:
        with lock:
            hit = rng.random() < p
            chosen = rng.choice(fault_replies) if hit else None
        return chosen if chosen is not None else succeed(request)

    return respond


def _schema_label_field(request: ChatRequest) -> str | None:
    """The first property with an ``enum`` in the request's JSON schema, if any."""
    fmt = request.response_format or {}
    schema = (
        (fmt.get("json_schema") or {}).get("schema")
        if isinstance(fmt.get("json_schema"), dict)
        else None
    )
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(props, dict):
        for name, spec in props.items():
            if isinstance(spec, dict) and "enum" in spec:
                return str(name)
    return None


LabelRule: TypeAlias = str | re.Pattern[str] | Mapping[str, str] | Callable[[str], str | None]


def obedient(
    rule: LabelRule | None = None,
    *,
    labels: Iterable[str] | None = None,
    field: str | None = None,
    default: str | None = None,
    confidence: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Responder:
    """A model that answers whatever label it is told to, found in the last user message.

    ``rule`` finds the label: a regex (group 1 if it has groups, else the whole match), a
    mapping ``{regex: label}`` (first match wins), or a callable ``text -> label | None``.
    Without a rule, the ``labels`` word mentioned last in the message wins. No match gives
    ``default``. The answer is ``{field: label, **extra}``; ``field`` defaults to the first
    ``enum`` property of the request's JSON schema, else ``"label"``. With ``labels`` and
    ``confidence`` the label token's logprobs give it that probability, the rest shared evenly.
    """
    known = list(labels or [])
    if rule is None and not known:
        raise ValueError("obedient() needs a rule or labels= to find the label in the message")
    if confidence is not None and not 0.0 < confidence <= 1.0:
        raise ValueError(f"obedient(confidence=...) must be in (0, 1], got {confidence!r}")

    def find(user: str) -> str | None:
        if callable(rule) and not isinstance(rule, re.Pattern):
            return rule(user)
        if isinstance(rule, Mapping):
            for pattern, label in rule.items():
                if re.search(pattern, user):
                    return label
            return None
        if rule is not None:
            m = re.search(rule, user)
            if m is None:
                return None
            return m.group(1) if m.re.groups else m.group(0)
        best: tuple[int, str] | None = None
        for label in known:
            for m in re.finditer(r"(?<!\w)" + re.escape(label) + r"(?!\w)", user, re.IGNORECASE):
                if best is None or m.start() > best[0]:
                    best = (m.start(), label)
        return best[1] if best else None

    def respond(request: ChatRequest) -> Reply:
        label = find(request.last_user_message)
        label = default if label is None else label
        name = field or _schema_label_field(request) or "label"
        probs = None
        if confidence is not None and label in known:
            others = [x for x in known if x != label]
            probs = {label: confidence}
            rest = (1.0 - confidence) / len(others) if others else 0.0
            probs.update({x: rest for x in others if rest > 0})
        return answer({name: label, **dict(extra or {})}, probs=probs)

    return respond


_CONFIG_KEYS = {"default", "queue", "rules", "fail_first", "faults"}


def responder_from_config(config: Mapping[str, Any]) -> Responder:
    """A responder from the JSON script of the subprocess mode::

        {"default": {"json": {"label": "positive"}} | {"obedient": {"labels": [...]}},
         "queue": [reply, ...],
         "rules": [{"contains": "...", "regex": "...", "reply": reply, "times": 1}],
         "fail_first": {"n": 2, "reply": {"error": 500}},
         "faults": {"p": 0.2, "seed": 0, "kinds": ["429", "500", "timeout", "reset"]}}

    Replies are in the form ``reply_from_dict`` reads. Layers apply outside in: faults, then
    fail_first, then the script (queue, rules, default).
    """
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown script key(s) {unknown}; known: {sorted(_CONFIG_KEYS)}")
    default_cfg = config.get("default")
    default: Responder | Reply | None
    if isinstance(default_cfg, Mapping) and "obedient" in default_cfg:
        default = obedient(**dict(default_cfg["obedient"]))
    else:
        default = None if default_cfg is None else reply_from_dict(default_cfg)
    script = Script(default)
    script.queue(*replies_from_list(config.get("queue", [])))
    for i, rule in enumerate(config.get("rules", [])):
        try:
            script.when(
                rule.get("contains"),
                regex=rule.get("regex"),
                reply=reply_from_dict(rule["reply"]),
                times=rule.get("times"),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"rule #{i} {rule}: {exc}") from None
    responder: Responder = script
    if "fail_first" in config:
        ff = dict(config["fail_first"])
        failure = reply_from_dict(ff["reply"]) if "reply" in ff else None
        responder = fail_first(int(ff.get("n", 1)), responder, failure=failure)
    if "faults" in config:
        responder = faults(responder, **dict(config["faults"]))
    return responder
