"""The public surface of llmlabel.testing and the validation of scripts."""

from __future__ import annotations

import math

import pytest

import llmlabel.testing as testing
from llmlabel.testing import Reply, answer, reply_from_dict, responder_from_config, tokenize


def test_all_is_curated():
    assert sorted(testing.__all__) == sorted(
        [
            "DEFAULT_REFUSAL",
            "FAULT_KINDS",
            "ChatRequest",
            "FakeLLMProcess",
            "FakeLLMServer",
            "Reply",
            "Responder",
            "Script",
            "answer",
            "choices",
            "error",
            "fail_first",
            "faults",
            "obedient",
            "rate_limited",
            "refusal",
            "reply_from_dict",
            "reset",
            "responder_from_config",
            "serve",
            "text",
            "timeout",
            "tokenize",
            "truncated",
        ]
    )
    for name in testing.__all__:
        assert hasattr(testing, name), name


@pytest.mark.parametrize(
    "content",
    [
        '{"label": "positive", "confidence": 0.9}',
        "Sure! It's *positive*.\n\n```json\n{}\n```",
        "",
        "naïve café ✓",
    ],
)
def test_tokens_concatenate_back_to_the_content(content):
    assert "".join(tokenize(content)) == content


def test_multi_word_labels_stay_one_token():
    tokens = tokenize('{"label": "very positive"}', {"very positive": 0.6, "positive": 0.4})
    assert "very positive" in tokens


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"json": {"label": "a"}}, "completion"),
        ({"text": "{oops", "finish_reason": "length"}, "completion"),
        ({"error": 503}, "error"),
        ({"error": 429, "retry_after": 2}, "error"),
        ({"timeout": None}, "hang"),
        ({"timeout": 3}, "hang"),
        ({"reset": True}, "reset"),
        ({"refusal": "no", "as_field": True}, "completion"),
    ],
)
def test_reply_from_dict(data, kind):
    assert reply_from_dict(data).kind == kind


def test_reply_from_dict_keeps_modifiers():
    reply = reply_from_dict(
        {"text": "{oops", "finish_reason": "length", "latency": 0.5, "probs": {"x": 0.5}}
    )
    assert (reply.finish_reason, reply.latency, dict(reply.token_probs or {})) == (
        "length",
        0.5,
        {"x": 0.5},
    )
    assert reply_from_dict({"timeout": None}).hang == math.inf


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"jsn": {}}, "unknown reply key"),
        ({"latency": 1}, "says nothing to answer"),
        ({"json": {}, "probs": {"a": 1.5}}, r"must be in \(0, 1\]"),
        ({"json": {}, "probs": {"a": 0.7, "b": 0.7}}, "sum to at most 1"),
        ({"error": 700}, "HTTP status"),
    ],
)
def test_bad_replies_say_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=message):
        reply_from_dict(data)


def test_bad_script_keys_are_named():
    with pytest.raises(ValueError, match="unknown script key"):
        responder_from_config({"defaults": {}})
    with pytest.raises(ValueError, match="rule #0"):
        responder_from_config({"rules": [{"contains": "x"}]})


def test_reply_validation():
    with pytest.raises(ValueError, match="latency"):
        answer({}, latency=-1)
    assert Reply().kind == "completion"
