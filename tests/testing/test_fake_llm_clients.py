"""Real clients against the fake server: the openai SDK and litellm see what a provider sends."""

from __future__ import annotations

import asyncio
import json
import math
import time

import openai
import pytest
from openai import AsyncOpenAI

from llmlabel.testing import (
    Script,
    answer,
    error,
    rate_limited,
    refusal,
    reset,
    text,
    timeout,
    truncated,
)

MESSAGES = [{"role": "user", "content": "Text: the soup was cold. Label it."}]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "label",
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}},
            "required": ["label"],
        },
    },
}


def create(srv, client_timeout: float = 5.0, **params):
    async def call():
        client = AsyncOpenAI(
            base_url=srv.base_url, api_key="x", max_retries=0, timeout=client_timeout
        )
        async with client:
            return await client.chat.completions.create(model="fake", messages=MESSAGES, **params)

    return asyncio.run(call())


def test_openai_sdk_reads_json_logprobs_and_n(fake_llm):
    srv = fake_llm(answer({"label": "negative"}, probs={"negative": 0.8, "positive": 0.15}))
    r = create(srv, response_format=SCHEMA, logprobs=True, top_logprobs=5, n=3, temperature=1)
    assert len(r.choices) == 3
    assert json.loads(r.choices[2].message.content) == {"label": "negative"}
    assert r.choices[0].finish_reason == "stop"
    (tok,) = [t for t in r.choices[0].logprobs.content if t.token == "negative"]
    assert {a.token: round(math.exp(a.logprob), 6) for a in tok.top_logprobs} == {
        "negative": 0.8,
        "positive": 0.15,
    }
    assert r.usage.prompt_tokens == 7 and r.usage.completion_tokens == 6
    assert srv.requests[0].body["response_format"] == SCHEMA


def test_openai_sdk_sees_429_with_retry_after(fake_llm):
    srv = fake_llm(rate_limited(retry_after=1.5))
    with pytest.raises(openai.RateLimitError) as info:
        create(srv)
    assert info.value.response.headers["retry-after"] == "1.5"
    assert srv.request_count == 1


def test_openai_sdk_sees_500(fake_llm):
    srv = fake_llm(error(500))
    with pytest.raises(openai.InternalServerError):
        create(srv)


def test_openai_sdk_times_out(fake_llm):
    srv = fake_llm(timeout())
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        create(srv, client_timeout=0.5)
    assert time.monotonic() - start < 2.0


def test_openai_sdk_sees_a_reset_as_a_connection_error(fake_llm):
    srv = fake_llm(reset())
    with pytest.raises(openai.APIConnectionError) as info:
        create(srv)
    assert not isinstance(info.value, openai.APITimeoutError)


def test_openai_sdk_gets_bad_content_verbatim(fake_llm):
    srv = fake_llm(Script().queue(text('{"label": '), refusal(as_field=True), truncated("abcdef")))
    assert create(srv).choices[0].message.content == '{"label": '
    message = create(srv).choices[0].message
    assert message.content is None and message.refusal.startswith("I'm sorry")
    choice = create(srv).choices[0]
    assert (choice.message.content, choice.finish_reason) == ("abc", "length")


def test_openai_sdk_waits_for_latency(fake_llm):
    srv = fake_llm(answer({"label": "positive"}, latency=0.25))
    start = time.monotonic()
    create(srv)
    assert time.monotonic() - start >= 0.25


def test_litellm_acompletion_round_trip(fake_llm):
    litellm = pytest.importorskip("litellm")
    script = Script(answer({"label": "positive"}, probs={"positive": 0.7, "negative": 0.3}))
    script.queue(rate_limited(0.1), reset())
    srv = fake_llm(script)

    async def call():
        return await litellm.acompletion(
            model="openai/fake",
            api_base=srv.base_url,
            api_key="x",
            messages=MESSAGES,
            response_format=SCHEMA,
            logprobs=True,
            top_logprobs=5,
            n=3,
            temperature=0.3,
            num_retries=0,
            timeout=5,
        )

    with pytest.raises(litellm.RateLimitError):
        asyncio.run(call())
    # litellm reports the SDK's APIConnectionError as InternalServerError("Connection error.")
    with pytest.raises((litellm.APIConnectionError, litellm.InternalServerError)):
        asyncio.run(call())
    r = asyncio.run(call())
    assert len(r.choices) == 3
    assert json.loads(r.choices[0].message.content) == {"label": "positive"}
    (tok,) = [t for t in r.choices[0].logprobs.content if t.token == "positive"]
    assert [a.token for a in tok.top_logprobs] == ["positive", "negative"]
    assert r.usage.completion_tokens == 6
    assert srv.request_count == 3  # num_retries=0: no hidden retries
    assert srv.requests[-1].body["n"] == 3 and srv.requests[-1].body["temperature"] == 0.3
