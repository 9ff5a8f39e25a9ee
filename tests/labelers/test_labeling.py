"""End to end against the loopback fake server: each provider behaviour → the stored outcome.

Every test asserts on the server's request count (no hidden retries anywhere) and on the
votes and ledger rows in a real database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import gc
import json

import pytest
from tests.labelers.conftest import CLASSES, Env, Setup, labeler, project_dict

from llmlabel.labelers.completion import Choice, Completion, CompletionRequest, litellm_completer
from llmlabel.labelers.runner import YOUNG_THRESHOLD, _collector_for_a_run, default_run_id
from llmlabel.store.tables import LLMCall, Vote
from llmlabel.testing import (
    FakeLLMServer,
    Script,
    answer,
    choices,
    error,
    fail_first,
    rate_limited,
    refusal,
    reset,
    text,
    timeout,
    truncated,
)

OK = answer({"label": "positive", "rationale": "glowing"}, probs={"positive": 0.6, "negative": 0.3, "neutral": 0.1})


def one_env(setup: Setup, **kw: object) -> Env:
    return setup(project_dict(labeler(concurrency=1, **kw)), ["text 0"])


def one(setup: Setup, srv: FakeLLMServer, n: int = 1, **kw: object) -> Env:
    return setup(project_dict(labeler(base_url=srv.base_url, concurrency=1, **kw)), [f"text {i}" for i in range(n)])


def test_scripted_answer_becomes_a_vote_with_logprob_confidence(setup: Setup, fake_llm) -> None:
    srv = fake_llm(OK)
    env = one(setup, srv)
    report = env.run()
    [vote] = env.votes()
    assert vote.label == "positive" and vote.rationale == "glowing"
    assert vote.confidence_method == "logprobs"
    assert vote.probs == pytest.approx([0.6, 0.3, 0.1])
    assert vote.confidence == pytest.approx(0.6)
    [call] = env.calls()
    assert call.outcome == "ok" and call.prompt_version == vote.prompt_version
    assert call.run_id == default_run_id(env.config) == report.run_id
    assert srv.request_count == 1
    body = srv.requests[0].body
    assert body["logprobs"] is True and body["temperature"] == 0.0
    assert body["response_format"]["schema"]["properties"]["label"]["enum"] == CLASSES


def test_logprobs_renormalize_over_allowed_labels(setup: Setup, fake_llm) -> None:
    # a grammar-less top_logprobs list: mass on tokens that are no label is dropped
    srv = fake_llm(answer({"label": "negative"}, probs={"negative": 0.4, "neutral": 0.2, "Sure": 0.3}))
    env = one(setup, srv)
    env.run()
    [vote] = env.votes()
    assert vote.probs == pytest.approx([0.0, 2 / 3, 1 / 3])
    assert vote.confidence == pytest.approx(2 / 3)


def test_without_logprobs_the_confidence_is_unknown_not_a_constant(setup: Setup, fake_llm) -> None:
    srv = fake_llm(answer({"label": "neutral"}, probs={"neutral": 0.9, "negative": 0.1}))
    env = one(setup, srv, params={"top_logprobs": 0})  # the server sends no alternatives
    env.run()
    [vote] = env.votes()
    assert vote.label == "neutral"
    assert vote.confidence is None and vote.probs is None and vote.confidence_method is None


def test_provider_returning_no_logprobs(setup: Setup) -> None:
    async def plain(request: CompletionRequest) -> Completion:
        return Completion(choices=[Choice(content='{"label": "negative"}', logprobs=None)])

    env = one_env(setup)
    env.run(completer=plain)
    [vote] = env.votes()
    assert vote.label == "negative" and vote.confidence is None


def test_429_retry_waits_for_retry_after(setup: Setup, fake_llm) -> None:
    srv = fake_llm(Script(default=OK).queue(rate_limited(retry_after=0.6)))
    env = one(setup, srv)
    env.run()
    assert srv.request_count == 2
    first, second = srv.requests
    assert second.received_at - first.received_at >= 0.6
    assert [v.label for v in env.votes()] == ["positive"]
    assert [c.outcome for c in env.calls()] == ["error", "ok"]


@pytest.mark.parametrize("failure", [error(500), error(503), reset(), timeout(10)], ids=["500", "503", "reset", "timeout"])
def test_transient_failures_are_retried(setup: Setup, fake_llm, failure) -> None:
    srv = fake_llm(fail_first(1, OK, failure=failure))
    env = one(setup, srv, timeout_seconds=0.5)
    env.run()
    assert srv.request_count == 2
    assert [v.label for v in env.votes()] == ["positive"]


def test_transient_failures_give_up_after_max_attempts_and_leave_the_item_pending(setup: Setup, fake_llm) -> None:
    srv = fake_llm(error(500))
    env = one(setup, srv)
    report = env.run()
    assert srv.request_count == 3  # max_attempts, nothing hidden below
    assert env.votes() == []
    assert report.labelers[0].failed == 1
    assert [c.outcome for c in env.calls()] == ["error"] * 3


def test_400_fails_at_once_as_an_abstention(setup: Setup, fake_llm) -> None:
    srv = fake_llm(error(400, "context length exceeded"))
    env = one(setup, srv)
    env.run()
    assert srv.request_count == 1
    [vote] = env.votes()
    assert vote.label is None and "400" in vote.abstain_reason and "context length" in vote.abstain_reason


def test_401_stops_the_labeler_and_leaves_items_pending(setup: Setup, fake_llm) -> None:
    srv = fake_llm(error(401))
    env = one(setup, srv, n=5)
    report = env.run()
    assert srv.request_count == 1
    assert env.votes() == []
    assert report.labelers[0].stopped and "401" in report.errors[0]


def test_malformed_json_is_reasked_once(setup: Setup, fake_llm) -> None:
    srv = fake_llm(Script(default=OK).queue(text('{"label": "positive"')))
    env = one(setup, srv)
    env.run()
    assert srv.request_count == 2
    reask = srv.requests[1].body["messages"]
    assert reask[-2] == {"role": "assistant", "content": '{"label": "positive"'}
    assert "not valid JSON" in reask[-1]["content"]
    assert [v.label for v in env.votes()] == ["positive"]


def test_label_outside_schema_twice_is_an_abstention(setup: Setup, fake_llm) -> None:
    srv = fake_llm(answer({"label": "postive"}))
    env = one(setup, srv)
    env.run()
    assert srv.request_count == 2
    assert "did you mean 'positive'" in srv.requests[1].body["messages"][-1]["content"]
    [vote] = env.votes()
    assert vote.label is None
    assert vote.abstain_reason.startswith("invalid answer after one re-ask") and "postive" in vote.abstain_reason


@pytest.mark.parametrize("reply", [refusal(), refusal(as_field=True)], ids=["text", "field"])
def test_refusal_is_an_abstention(setup: Setup, fake_llm, reply) -> None:
    srv = fake_llm(reply)
    env = one(setup, srv)
    env.run()
    assert srv.request_count == 1
    [vote] = env.votes()
    assert vote.label is None and vote.abstain_reason.startswith("refused")


def test_truncated_answer_is_an_abstention(setup: Setup, fake_llm) -> None:
    srv = fake_llm(truncated({"label": "positive", "rationale": "a long story"}))
    env = one(setup, srv)
    env.run()
    assert srv.request_count == 1
    [vote] = env.votes()
    assert vote.label is None and "max_tokens" in vote.abstain_reason


def test_self_consistency_samples_are_one_vote(setup: Setup, fake_llm) -> None:
    srv = fake_llm(choices({"label": "positive"}, {"label": "negative"}, {"label": "positive"}, {"label": "positive"}))
    env = one(setup, srv, confidence="samples", samples=4, params={"temperature": 0.8})
    env.run()
    assert srv.request_count == 1 and srv.requests[0].body["n"] == 4
    [vote] = env.votes()
    assert vote.label == "positive" and vote.confidence_method == "samples"
    assert vote.probs == pytest.approx([0.75, 0.25, 0.0]) and vote.confidence == pytest.approx(0.75)


def test_samples_topped_up_when_the_provider_ignores_n(setup: Setup) -> None:
    # the fake server always honours n; a provider that ignores it is a completer double here
    answers = iter(["negative", "positive", "negative"])
    asked: list[int] = []

    async def one_choice(request: CompletionRequest) -> Completion:
        asked.append(request.params["n"])
        return Completion(choices=[Choice(content=json.dumps({"label": next(answers)}))])

    env = one_env(setup, confidence="samples", samples=3, params={"temperature": 0.8})
    env.run(completer=one_choice)
    assert asked == [3, 2, 1]
    [vote] = env.votes()
    assert vote.label == "negative" and vote.confidence == pytest.approx(2 / 3)


def test_verbalized_confidence(setup: Setup, fake_llm) -> None:
    srv = fake_llm(answer({"label": "neutral", "rationale": "meh", "confidence": 0.7}))
    env = one(setup, srv, confidence="verbalized")
    env.run()
    [vote] = env.votes()
    assert vote.confidence_method == "verbalized" and vote.confidence == pytest.approx(0.7)
    assert vote.probs == pytest.approx([0.15, 0.15, 0.7])
    assert "confidence" in srv.requests[0].body["response_format"]["schema"]["required"]


def test_verbalized_confidence_missing_is_reasked(setup: Setup, fake_llm) -> None:
    srv = fake_llm(Script(default=answer({"label": "neutral", "confidence": 0.9})).queue(answer({"label": "neutral"})))
    env = one(setup, srv, confidence="verbalized")
    env.run()
    assert srv.request_count == 2
    assert env.votes()[0].confidence == pytest.approx(0.9)


def test_rerun_makes_no_requests_and_cached_answers_cost_nothing(setup: Setup, fake_llm) -> None:
    srv = fake_llm(OK)
    env = one(setup, srv, n=6)
    env.run()
    assert srv.request_count == 6
    assert env.run().votes == 0  # nothing pending
    env.forget_votes()  # a crash after the ledger rows, before the votes
    report = env.run()
    assert srv.request_count == 6
    assert report.labelers[0].cache_hits == 6 and report.labelers[0].calls == 0
    assert len(env.votes()) == 6 and env.count(LLMCall) == 6


def test_budget_cap_stops_calls_and_survives_a_restart(setup: Setup, fake_llm) -> None:
    srv = fake_llm(OK)
    env = one(setup, srv, n=10, cost={"per_call": 0.01})
    report = env.run(budget_usd=0.03)
    assert report.budget_reached and srv.request_count == 3
    assert len(env.votes()) == 3
    again = env.run(budget_usd=0.03)  # the same run id: already spent
    assert srv.request_count == 3 and again.votes == 0 and again.budget_reached
    more = env.run(budget_usd=0.05)
    assert srv.request_count == 5 and len(env.votes()) == 5
    fresh = env.run(budget_usd=0.02, run_id="second")
    assert srv.request_count == 7 and fresh.spent_usd == pytest.approx(0.02)
    assert sum(v.cost_usd for v in env.votes()) == pytest.approx(0.07)
    assert more.spent_usd == pytest.approx(0.05)


def test_two_labelers_vote_once_each(setup: Setup, fake_llm) -> None:
    srv = fake_llm(OK)
    env = setup(project_dict(labeler("a", srv.base_url), labeler("b", srv.base_url, concurrency=3)),
                [f"t{i}" for i in range(12)])
    report = env.run()
    assert srv.request_count == 24 and report.votes == 24
    assert env.count(Vote) == 24


def test_a_run_makes_young_collections_rarer_and_gives_the_thresholds_back(setup: Setup, fake_llm) -> None:
    srv = fake_llm(OK)
    env = one(setup, srv, n=3)
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    inner = litellm_completer()

    async def noting(request: CompletionRequest) -> Completion:
        seen.append(gc.get_threshold())
        return await inner(request)

    env.run(completer=noting)
    assert seen and all(t == (max(YOUNG_THRESHOLD, before[0]), *before[1:]) for t in seen)
    assert gc.get_threshold() == before
    # overlapping runs (e.g. two in one server process): raised until the last one ends
    first, second = _collector_for_a_run(), _collector_for_a_run()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
