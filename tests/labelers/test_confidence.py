"""Confidence from token log-probabilities, samples and words: pure, checked by hand."""

from __future__ import annotations

import math

import pytest

from llmlabel.labelers.confidence import (
    logprob_probs,
    sample_distribution,
    sequence_confidence,
    verbalized_probs,
)


def entry(token: str, p: float = 1.0, alts: dict[str, float] | None = None) -> dict:
    top = [{"token": t, "logprob": math.log(q)} for t, q in (alts or {token: p}).items()]
    return {"token": token, "logprob": math.log(p), "top_logprobs": top}


def tokens(*parts: dict) -> list[dict]:
    return [entry('{"'), entry("label"), entry('":'), *parts, entry("}")]


def test_renormalized_over_label_tokens_only() -> None:
    # llama.cpp: top_logprobs are pre-grammar, so " Sure" (no label) has mass that must be dropped
    lp = tokens(entry(' "', 1.0), entry("neg", 0.5, {"neg": 0.5, "pos": 0.25, " Sure": 0.25}), entry('ative"', 1.0))
    assert logprob_probs(lp, "label", ["positive", "negative"]) == pytest.approx([1 / 3, 2 / 3])


def test_quote_inside_the_label_token() -> None:
    lp = tokens(entry(' "pos', 0.6, {' "pos': 0.6, ' "neg': 0.3, " {": 0.1}), entry('itive"'))
    assert logprob_probs(lp, "label", ["positive", "negative"]) == pytest.approx([2 / 3, 1 / 3])


def test_shared_first_token_is_followed_to_the_next_position() -> None:
    # "neutral" and "negative" both start with "ne": the next token decides between them
    lp = tokens(entry(' "'), entry("ne", 0.8, {"ne": 0.8, "pos": 0.2}), entry("ut", 0.75, {"ut": 0.75, "g": 0.25}),
                entry('ral"'))
    probs = logprob_probs(lp, "label", ["positive", "negative", "neutral"])
    assert probs == pytest.approx([0.2, 0.8 * 0.25, 0.8 * 0.75])


def test_integer_option_index() -> None:
    lp = [entry('{"option": '), entry("1", 0.7, {"1": 0.7, "0": 0.2, "x": 0.1}), entry("}")]
    assert logprob_probs(lp, "option", [0, 1, 2]) == pytest.approx([2 / 9, 7 / 9, 0.0])


def test_no_logprobs_no_vector() -> None:
    assert logprob_probs(None, "label", ["a", "b"]) is None
    assert logprob_probs([entry('{"x": 1}')], "label", ["a", "b"]) is None


def test_multi_label_sequence_probability() -> None:
    lp = [entry('{"labels": ['), entry('"a"', 0.5), entry(","), entry('"b"', 0.8), entry("]}")]
    assert sequence_confidence(lp, "labels") == pytest.approx(0.4)


def test_samples_are_one_distribution() -> None:
    label, probs, conf = sample_distribution(["b", "a", "b", "c"], ["a", "b", "c"], multi=False)
    assert label == "b" and probs == [0.25, 0.5, 0.25] and conf == 0.5
    label, probs, conf = sample_distribution([["a"], ["a", "b"], ["a"]], ["a", "b"], multi=True)
    assert label == ["a"] and probs == pytest.approx([1.0, 1 / 3]) and conf == pytest.approx(2 / 3)


def test_verbalized_spreads_the_rest() -> None:
    assert verbalized_probs("b", 0.7, ["a", "b", "c", "d"]) == pytest.approx([0.1, 0.7, 0.1, 0.1])


def test_a_label_cut_off_a_full_top_k_list_is_bounded_not_impossible() -> None:
    alts = {"pos": 0.5, "I": 0.3, "The": 0.1}  # a full top-3 list, as llama.cpp sends pre-grammar
    lp = tokens(entry(' "'), entry("pos", 0.5, alts), entry('itive"'))
    assert logprob_probs(lp, "label", ["positive", "negative"], top_k=3) == pytest.approx([0.5 / 0.6, 0.1 / 0.6])
    assert logprob_probs(lp, "label", ["positive", "negative"], top_k=5) == pytest.approx([1.0, 0.0])
