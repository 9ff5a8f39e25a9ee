"""Answer schemas and reading answers: pure, no server."""

from __future__ import annotations

import pytest

from llmlabel.config import parse_config
from llmlabel.labelers.completion import Choice
from llmlabel.labelers.output import AnswerError, json_schema, parse_answer

SINGLE = parse_config({"name": "p", "labels": {"type": "single", "classes": ["pos", "neg"]}}).labels
MULTI = parse_config({"name": "p", "labels": {"type": "multi", "classes": ["a", "b", "c"]}}).labels
TAXO = parse_config({"name": "p", "labels": {"type": "taxonomy", "tree": {"X": ["x1", "x2"], "Y": None}}}).labels
OPTS = parse_config({"name": "p", "labels": {"type": "options"}}).labels
ITEM = {"options": ["first", "second", "third"]}


def read(content: str | None, schema=SINGLE, item=None, **kw):
    return parse_answer(Choice(content=content, **kw), schema, item or {}, verbalized=False)


def test_schemas_per_label_type() -> None:
    assert json_schema(SINGLE, {}, verbalized=False)["properties"]["label"]["enum"] == ["pos", "neg"]
    multi = json_schema(MULTI, {}, verbalized=True)
    assert multi["properties"]["labels"]["items"]["enum"] == ["a", "b", "c"]
    assert multi["required"] == ["labels", "rationale", "confidence"]
    assert json_schema(TAXO, {}, verbalized=False)["properties"]["label"]["enum"] == ["X/x1", "X/x2", "Y"]
    assert json_schema(OPTS, ITEM, verbalized=False)["properties"]["option"] == {"type": "integer", "enum": [0, 1, 2]}


def test_valid_answers_are_canonical() -> None:
    assert read('{"label": " pos ", "rationale": "r"}').label == "pos"
    assert read('```json\n{"label": "neg"}\n```').label == "neg"
    assert read('{"labels": ["c", "a"]}', MULTI).label == ["a", "c"]
    assert read('{"label": "X / x2"}', TAXO).label == "X/x2"
    assert read('{"option": 2}', OPTS, ITEM).label == 2


@pytest.mark.parametrize(
    ("content", "schema", "message"),
    [
        ('{"label": "posi"}', SINGLE, "not one of"),
        ('{"label": "pos"', SINGLE, "not valid JSON"),
        ('["pos"]', SINGLE, "must be a JSON object"),
        ('{"answer": "pos"}', SINGLE, "no 'label' field"),
        ('{"label": "X"}', TAXO, "not a leaf"),
        ('{"labels": ["d"]}', MULTI, "not one of"),
        ("", SINGLE, "empty"),
    ],
)
def test_invalid_answers_say_why(content: str, schema, message: str) -> None:
    with pytest.raises(AnswerError) as err:
        read(content, schema)
    assert err.value.kind == "invalid" and message in err.value.reason


def test_option_out_of_range() -> None:
    with pytest.raises(AnswerError, match="out of range"):
        read('{"option": 3}', OPTS, ITEM)


def test_refusals_and_truncation() -> None:
    for choice in (Choice(content="I'm sorry, but I can't label this."), Choice(content=None, refusal="No."),
                   Choice(content="{}", finish_reason="content_filter")):
        with pytest.raises(AnswerError) as err:
            parse_answer(choice, SINGLE, {}, verbalized=False)
        assert err.value.kind == "refusal"
    with pytest.raises(AnswerError) as err:
        read('{"label": "po', finish_reason="length")
    assert err.value.kind == "truncated"


def test_verbalized_confidence_is_read_and_checked() -> None:
    ok = parse_answer(Choice(content='{"label": "pos", "confidence": "80%"}'), SINGLE, {}, verbalized=True)
    assert ok.verbalized == pytest.approx(0.8)
    with pytest.raises(AnswerError, match="confidence"):
        parse_answer(Choice(content='{"label": "pos", "confidence": 3}'), SINGLE, {}, verbalized=True)
