"""One LLM labeler: an item in, one vote out (a label with confidence, or an abstention).

Per item: render the prompt, ask (from the ledger if this exact request was answered before,
else the provider through the retry layer and the limits), read the answer against the
schema, re-ask once with the validation error if it was invalid, then turn the answer(s) into
a vote with a confidence obtained as configured.

Failure policy, per item:
- an answer outside the schema twice, a refusal, a truncated answer → an abstention vote with
  its reason (the model did answer; the consensus learns how often it abstains);
- a 4xx other than 401/403/404/429 (the request itself is bad for this item, e.g. too long) →
  an abstention with the provider's error, after exactly one request;
- 401/403/404 (bad key, unknown model) → ``ProviderError``: the labeler stops, items stay
  pending (every item would fail the same way; fix the config and run again);
- transient failures (429, 5xx, timeouts, resets) after ``max_attempts`` → no vote: the item
  stays pending for the next run (an outage is not the model's opinion).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmlabel.config import LabelerConfig, ProjectConfig
from llmlabel.errors import ProviderError
from llmlabel.labelers import confidence as conf
from llmlabel.labelers.completion import (
    Completer,
    Completion,
    CompletionRequest,
    PermanentError,
    TransientError,
    supports_response_schema,
)
from llmlabel.labelers.ledger import Budget, Cached, CallRow, Writer, lookup, request_hash
from llmlabel.labelers.limits import Limits
from llmlabel.labelers.output import (
    Answer,
    AnswerError,
    choices_of,
    json_schema,
    label_field,
    parse_answer,
    reask_message,
)
from llmlabel.labelers.prompts import FewShot, Prompter
from llmlabel.labelers.retry import call_with_retries
from llmlabel.schema import MultiLabel
from llmlabel.votes import VoteInput

FATAL_STATUSES = (401, 403, 404)
_CALL_PARAMS = ("api_base", "api_key", "response_format")


class ItemFailed(Exception):
    """Transient failures outlasted the retries: the item gets no vote this run."""


RATIONALE_MAX_CHARS = 100


@dataclass
class Endpoint:
    """Where a labeler's calls go: litellm model string, optional base URL and key."""

    model: str
    api_base: str | None = None
    api_key: str | None = None
    json_schema_mode: bool | None = None  # None: ask litellm's capability table
    server_identity: str | None = None  # see CompletionRequest.server_identity


@dataclass
class Work:
    """One item for one labeler, with its first request prepared (so its hash can be prefetched)."""

    item_id: int
    lease_id: int
    fields: Mapping[str, Any]
    messages: list[dict[str, str]]
    request: CompletionRequest
    hash: str
    cached: Completion | Cached | None = None  # the answer, when the ledger has it


@dataclass
class Tally:
    calls: int = 0
    cache_hits: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    errors: list[str] = field(default_factory=list)


class LLMLabeler:
    def __init__(
        self, config: ProjectConfig, labeler: LabelerConfig, *, endpoint: Endpoint, completer: Completer,
        prompter: Prompter, few_shot: FewShot, writer: Writer, budget: Budget, limits: Limits,
        project_id: int, run_id: str,
    ) -> None:
        self.config, self.labeler, self.endpoint = config, labeler, endpoint
        self.completer, self.prompter, self.few_shot = completer, prompter, few_shot
        self.writer, self.budget, self.limits = writer, budget, limits
        self.project_id, self.run_id = project_id, run_id
        self.schema = config.labels
        self.field = label_field(self.schema)
        self.method = labeler.confidence
        self.native_schema = (
            endpoint.json_schema_mode if endpoint.json_schema_mode is not None else supports_response_schema(endpoint.model)
        )

    # -- requests ----------------------------------------------------------------------------

    def _params(self, fields: Mapping[str, Any], n: int, seed: int | None) -> dict[str, Any]:
        params = {k: v for k, v in self.labeler.params.items() if k not in _CALL_PARAMS}
        if "response_format" in self.labeler.params:
            params["response_format"] = self.labeler.params["response_format"]
        else:
            schema = json_schema(self.schema, fields, verbalized=self.method == "verbalized")
            if not self.native_schema:
                # A grammar-constrained server (llama.cpp) enforces this bound, and a small local
                # model spends most of its time writing the rationale: keep it to a sentence.
                schema["properties"]["rationale"]["maxLength"] = RATIONALE_MAX_CHARS
            params["response_format"] = (
                {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
                if self.native_schema else {"type": "json_object", "schema": schema}
            )
        if self.method == "samples":
            params["n"] = n
        else:
            params.setdefault("temperature", 0.0)
        if self.method == "logprobs":
            params["logprobs"] = True
            params.setdefault("top_logprobs", 10)
        if seed is not None:
            params["seed"] = seed
        return params

    def request(self, messages: list[dict[str, str]], fields: Mapping[str, Any], n: int | None = None,
                seed: int | None = None) -> CompletionRequest:
        return CompletionRequest(
            model=self.endpoint.model, messages=messages, api_base=self.endpoint.api_base,
            api_key=self.endpoint.api_key, timeout=self.labeler.timeout_seconds,
            server_identity=self.endpoint.server_identity,
            params=self._params(fields, n or self.labeler.samples, seed),
        )

    def prepare(self, item_id: int, lease_id: int, fields: Mapping[str, Any]) -> Work:
        examples = self.few_shot.pick(item_id, self.prompter.item_text(fields)) if self.few_shot.count else []
        messages = self.prompter.messages(fields, examples)
        req = self.request(messages, fields)
        return Work(item_id, lease_id, fields, messages, req, request_hash(req, self.labeler.name))

    # -- calls -------------------------------------------------------------------------------

    def _row(self, request: CompletionRequest, h: str, **kw: Any) -> CallRow:
        return CallRow(project_id=self.project_id, labeler=self.labeler.name, model=request.model,
                       prompt_version=self.prompter.version, request_hash=h, run_id=self.run_id, **kw)

    async def ask(self, request: CompletionRequest, tally: Tally, h: str | None = None,
                  cached: Completion | Cached | None = None) -> Completion:
        h = h or request_hash(request, self.labeler.name)
        if cached is not None:
            tally.cache_hits += 1
            return cached.completion() if isinstance(cached, Cached) else cached
        self.budget.check()
        self.writer.check()

        def failed(req: CompletionRequest, exc: Exception, latency: float) -> None:
            tally.calls += 1
            status = getattr(exc, "status", None)
            self.writer.record_call(self._row(req, h, outcome="error", latency_ms=latency,
                                              error=f"{status or ''} {exc}".strip()[:2000]))

        slots = self.limits.slots
        await slots.acquire()
        try:
            result, _ = await call_with_retries(
                self.completer, request, limits=self.limits, max_attempts=self.labeler.max_attempts, on_failure=failed,
            )
        except BaseException as exc:
            slots.release()
            if isinstance(exc, TransientError):
                raise ItemFailed(f"gave up after {self.labeler.max_attempts} attempts: {exc}") from exc
            if isinstance(exc, PermanentError) and exc.status in FATAL_STATUSES:
                raise ProviderError(
                    f"labeler {self.labeler.name!r}: HTTP {exc.status} from {request.model}: {exc} "
                    "(check the model name, the API key and api_base)", attempts=1,
                ) from exc
            raise
        tally.calls += 1
        tally.cost += result.cost_usd
        tally.latency_ms += result.latency_ms
        self.budget.add(result.cost_usd)
        # The slot is given back once the row cannot be lost (in the run's journal, or committed),
        # not before: a crash after that never pays for this answer again, and before it at most
        # the calls holding slots are lost.
        self.writer.record_call(self._row(
            request, h, outcome="ok", response=result.to_dict(), prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, cost_usd=result.cost_usd, latency_ms=result.latency_ms,
        ), done=slots.release)
        return result

    # -- reading answers -----------------------------------------------------------------------

    def _read(self, completion: Completion, fields: Mapping[str, Any]) -> tuple[list[tuple[Answer, Any]], AnswerError | None]:
        good, last = [], None
        for choice in completion.choices:
            try:
                good.append((parse_answer(choice, self.schema, fields, verbalized=self.method == "verbalized"), choice))
            except AnswerError as err:
                last = err
        if not completion.choices:
            last = AnswerError("invalid", "the provider returned no choices")
        return good, last

    async def _answers(self, work: Work, tally: Tally) -> tuple[list[tuple[Answer, Any]], AnswerError | None]:
        completion = await self.ask(work.request, tally, work.hash, work.cached)
        good, err = self._read(completion, work.fields)
        was_cached = work.cached is not None
        if not good and err is not None and err.kind == "invalid":
            messages = [*work.messages, {"role": "assistant", "content": err.raw or ""},
                        {"role": "user", "content": reask_message(err)}]
            req = self.request(messages, work.fields)
            completion = await self.ask(req, tally, cached=await self._maybe_cached(req, was_cached))
            good, err = self._read(completion, work.fields)
        elif good and self.method == "samples":
            rounds = 0  # a provider that ignores n (llama.cpp): top up with seeded calls
            while len(completion.choices) < self.labeler.samples and rounds < self.labeler.samples:
                rounds += 1
                missing = self.labeler.samples - sum(1 for _ in completion.choices)
                req = self.request(work.messages, work.fields, n=missing, seed=rounds)
                more = await self.ask(req, tally, cached=await self._maybe_cached(req, was_cached))
                if not more.choices:
                    break
                completion = Completion(choices=[*completion.choices, *more.choices])
                extra, _ = self._read(more, work.fields)
                good += extra
        return good, err

    async def _maybe_cached(self, request: CompletionRequest, look: bool) -> Cached | None:
        """Follow-up requests can only be in the ledger if the first one was."""
        if not look:
            return None
        h = request_hash(request, self.labeler.name)
        return (await asyncio.to_thread(lookup, self.writer.engine, [h])).get(h)

    # -- the vote --------------------------------------------------------------------------

    async def label(self, work: Work) -> tuple[VoteInput, Tally]:
        tally = Tally()
        try:
            good, err = await self._answers(work, tally)
        except PermanentError as exc:
            return self._abstain(f"provider error {exc.status}: {exc}", tally), tally
        if not good:
            reason = err.reason if err else "no answer"
            prefix = "" if err is None or err.kind != "invalid" else "invalid answer after one re-ask: "
            return self._abstain(prefix + reason, tally), tally
        return self._vote(good, work.fields, tally), tally

    def _abstain(self, reason: str, tally: Tally) -> VoteInput:
        return VoteInput(label=None, abstain_reason=reason[:2000], cost_usd=tally.cost,
                         latency_ms=tally.latency_ms, prompt_version=self.prompter.version)

    def _vote(self, good: list[tuple[Answer, Any]], fields: Mapping[str, Any], tally: Tally) -> VoteInput:
        values = choices_of(self.schema, fields)
        multi = isinstance(self.schema, MultiLabel)
        first, choice = good[0]
        label, probs, confidence = first.label, None, None
        method: str | None = self.method
        if self.method == "samples":
            label, probs, confidence = conf.sample_distribution([a.label for a, _ in good], values, multi)
        elif self.method == "verbalized":
            confidence = first.verbalized
            probs = None if multi else conf.verbalized_probs(label, confidence or 0.0, values)
        elif multi:
            confidence = conf.sequence_confidence(choice.logprobs, self.field)
        else:
            top_k = int(self.labeler.params.get("top_logprobs", 10) or 0)
            probs = conf.logprob_probs(choice.logprobs, self.field, values, top_k)
            if probs is not None and label in values:
                confidence = probs[values.index(label)]
            else:
                probs = None
        if confidence is None:
            method = None  # e.g. the provider returned no logprobs: unknown, not a made-up number
        return VoteInput(
            label=label, confidence=confidence, confidence_method=method, probs=probs, rationale=first.rationale,
            latency_ms=tally.latency_ms, cost_usd=tally.cost, prompt_version=self.prompter.version,
        )
