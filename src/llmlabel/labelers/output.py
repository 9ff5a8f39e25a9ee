"""Structured output: the JSON schema an answer must follow, and reading an answer against it.

The schema is built from the project's label schema, so the provider (JSON-schema mode) or the
local server (grammar) can only produce valid labels where it enforces schemas, and so we can
name the violation where it does not. The label field comes first: its token log-probabilities
are then the model's belief about the label, not about its own rationale.

| label schema | answer field | JSON schema                                   |
|--------------|--------------|-----------------------------------------------|
| single       | ``label``    | string enum of the classes                    |
| multi        | ``labels``   | array of the class enum (may be empty)        |
| taxonomy     | ``label``    | string enum of the leaf paths                 |
| options      | ``option``   | integer enum of the item's option indices     |

A bad answer is an ``AnswerError`` with a ``kind``: ``invalid`` (worth one re-ask with the
message), ``refusal`` and ``truncated`` (recorded as abstentions straight away: asking again
costs money and meets the same refusal or the same ``max_tokens``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmlabel.errors import LabelError
from llmlabel.labelers.completion import Choice
from llmlabel.schema import Label, MultiLabel, Options, SingleChoice, Taxonomy

LabelSchema = SingleChoice | MultiLabel | Taxonomy | Options

_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry,|i can(no|')t|i cannot|i'?m (not able|unable)|i am (not able|unable)|"
    r"as an ai|i won'?t|i will not|unfortunately,? i)",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class AnswerError(Exception):
    def __init__(self, kind: str, reason: str, raw: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind  # invalid | refusal | truncated
        self.reason = reason
        self.raw = raw


@dataclass
class Answer:
    label: Label
    rationale: str | None
    verbalized: float | None
    raw: str


def label_field(schema: LabelSchema) -> str:
    if isinstance(schema, MultiLabel):
        return "labels"
    if isinstance(schema, Options):
        return "option"
    return "label"


def choices_of(schema: LabelSchema, item: Mapping[str, Any] | None = None) -> list[Any]:
    """The values the label field may take, in schema order (the order of ``Vote.probs``)."""
    if isinstance(schema, Options):
        return list(range(len(schema.options_of(item or {}))))
    return list(schema.class_names)


def json_schema(schema: LabelSchema, item: Mapping[str, Any] | None, *, verbalized: bool) -> dict[str, Any]:
    """The JSON schema of one answer for this item."""
    values = choices_of(schema, item)
    if isinstance(schema, MultiLabel):
        label: dict[str, Any] = {"type": "array", "items": {"type": "string", "enum": values}}
    elif isinstance(schema, Options):
        label = {"type": "integer", "enum": values}
    else:
        label = {"type": "string", "enum": values}
    props: dict[str, Any] = {label_field(schema): label, "rationale": {"type": "string"}}
    if verbalized:
        props["confidence"] = {"type": "number", "minimum": 0, "maximum": 1}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _strip(content: str) -> str:
    text = content.strip()
    m = _FENCE.match(text)
    return m.group(1) if m else text


def check_choice(choice: Choice) -> str:
    """The choice's text, or an ``AnswerError`` for a refusal or a truncated answer."""
    if choice.refusal:
        raise AnswerError("refusal", f"refused: {choice.refusal[:300]}", choice.refusal)
    if choice.finish_reason == "content_filter":
        raise AnswerError("refusal", "refused: the provider's content filter stopped the answer", choice.content)
    if choice.finish_reason == "length":
        raise AnswerError(
            "truncated", "truncated: the answer hit max_tokens before it was complete; raise params.max_tokens",
            choice.content,
        )
    content = choice.content or ""
    if not content.strip():
        raise AnswerError("invalid", "the answer was empty; answer with the JSON object only", content)
    return content


def parse_answer(
    choice: Choice, schema: LabelSchema, item: Mapping[str, Any], *, verbalized: bool
) -> Answer:
    """Read one choice into a canonical label, or raise ``AnswerError`` saying what is wrong."""
    content = check_choice(choice)
    text = _strip(content)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if _REFUSAL.match(content):
            raise AnswerError("refusal", f"refused: {content.strip()[:300]}", content) from None
        raise AnswerError("invalid", f"the answer is not valid JSON ({exc.msg} at position {exc.pos})", content) from None
    if not isinstance(data, dict):
        raise AnswerError("invalid", f"the answer must be a JSON object, got {type(data).__name__}", content)
    key = label_field(schema)
    if key not in data:
        raise AnswerError("invalid", f"the answer has no {key!r} field", content)
    try:
        label = schema.validate_label(data[key], item)
    except LabelError as exc:
        raise AnswerError("invalid", str(exc), content) from None
    if isinstance(schema, Taxonomy) and label not in schema.leaves:
        raise AnswerError("invalid", f"label {label!r} is not a leaf of the taxonomy; choose a full path", content)
    rationale = data.get("rationale")
    conf = None
    if verbalized:
        conf = data.get("confidence")
        if isinstance(conf, str):
            try:
                conf = float(conf.strip().rstrip("%")) / (100.0 if conf.strip().endswith("%") else 1.0)
            except ValueError:
                conf = None
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.0 <= float(conf) <= 1.0:
            raise AnswerError("invalid", "the answer needs a 'confidence' number between 0 and 1", content)
        conf = float(conf)
    return Answer(label=label, rationale=str(rationale) if rationale is not None else None, verbalized=conf, raw=content)


def reask_message(error: AnswerError) -> str:
    return (
        f"Your answer was not valid: {error.reason}. "
        "Answer again with only the JSON object that follows the required schema."
    )
