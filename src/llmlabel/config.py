"""The project file: one YAML document that says what to label, how, by whom, and when to stop.

Parsed into pydantic models with ``extra="forbid"`` so a typo is an error, not a silently
ignored key; every error names the field path (``labelers.0.concurrency: …``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmlabel.errors import ConfigError
from llmlabel.schema import LabelSchema, Options

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Instructions(_Strict):
    """Shown to every voter: to annotators on the task page and to LLMs in the system prompt."""

    guidelines: str = ""


class CostOverride(_Strict):
    """USD prices for a model litellm has no price for (a local or private model)."""

    input_per_million: float = Field(default=0.0, ge=0)
    output_per_million: float = Field(default=0.0, ge=0)
    per_call: float = Field(default=0.0, ge=0)


class FewShot(_Strict):
    count: int = Field(default=0, ge=0, le=50)
    strategy: Literal["fixed", "similar"] = "fixed"


class LabelerConfig(_Strict):
    name: str
    model: str = Field(description="a litellm model string, e.g. openai/gpt-4o-mini or local/smollm2")
    kind: Literal["llm", "model"] = "llm"
    prompt: str = Field(default="default", description="template set in prompts/: <prompt>.system.j2 and <prompt>.user.j2")
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the completion call (temperature, max_tokens, api_base, …)")
    api_key_env: str | None = Field(default=None, description="environment variable holding the API key")
    confidence: Literal["logprobs", "samples", "verbalized"] = "logprobs"
    samples: int = Field(default=1, ge=1, le=20)
    few_shot: FewShot = Field(default_factory=FewShot)
    cost: CostOverride | None = None
    concurrency: int = Field(default=4, ge=1, le=512)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=4, ge=1, le=10)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '_', '-', '.' (at most 64 characters)")
        return v

    @model_validator(mode="after")
    def _samples_need_temperature(self) -> LabelerConfig:
        if self.confidence == "samples":
            if self.samples < 2:
                raise ValueError("confidence 'samples' needs samples ≥ 2 (self-consistency over n answers)")
            if float(self.params.get("temperature", 0.0)) <= 0:
                raise ValueError("confidence 'samples' needs params.temperature > 0, or the samples all agree")
        return self


class Policy(_Strict):
    """When an item is decided, how many votes it may cost, and how humans are kept honest."""

    target_confidence: float = Field(default=0.97, gt=0.5, lt=1.0)
    min_human_votes: int = Field(default=1, ge=0)
    max_votes: int = Field(default=7, ge=1)
    gold_rate: float = Field(default=0.1, ge=0.0, le=0.9)
    quality_bar: float = Field(default=0.7, ge=0.0, le=1.0, description="lowest acceptable lower bound of an annotator's gold accuracy")
    qualification_tasks: int = Field(default=5, ge=0)
    lease_seconds: int = Field(default=600, ge=5)
    budget_usd: float | None = Field(default=None, ge=0)
    show_suggestions: bool = False
    blind_review: bool = False
    costs: dict[str, float] = Field(
        default_factory=lambda: {"llm": 0.001, "model": 0.0005, "human": 0.05, "expert": 0.5},
        description="relative cost of one vote per voter kind; the engine asks the kind with the best information per unit cost",
    )

    @model_validator(mode="after")
    def _votes(self) -> Policy:
        if self.min_human_votes > self.max_votes:
            raise ValueError(f"min_human_votes ({self.min_human_votes}) exceeds max_votes ({self.max_votes})")
        return self


class ProjectConfig(_Strict):
    name: str
    description: str = ""
    instructions: Instructions = Field(default_factory=Instructions)
    labels: LabelSchema
    id_field: str = "id"
    item_template: str = Field(default="{{ text }}", description="Jinja2 template: which item fields voters see")
    labelers: list[LabelerConfig] = Field(default_factory=list)
    policy: Policy = Field(default_factory=Policy)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '_', '-', '.' (at most 64 characters), starting with a letter or digit")
        return v

    @model_validator(mode="after")
    def _unique_labelers(self) -> ProjectConfig:
        names = [lab.name for lab in self.labelers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"labeler names must be unique; repeated: {', '.join(dupes)}")
        if isinstance(self.labels, Options) and self.labels.field == self.id_field:
            raise ValueError("labels.field must differ from id_field")
        return self

    def content_hash(self) -> str:
        """Identifies a config version: same settings, same hash, whatever the YAML formatting."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def _format_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in {"single", "multi", "taxonomy", "options"})
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling; see the project file reference in the README)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{loc or '(top level)'}: {msg}")
    return f"{source}: invalid project file: " + "; ".join(parts)


def parse_config(data: Any, source: str = "project file") -> ProjectConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a project file must be a YAML mapping, got {type(data).__name__}")
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_config(path: str | Path) -> ProjectConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"project file {path} does not exist; create one with `llmlabel init`") from None
    except UnicodeDecodeError:
        raise ConfigError(f"project file {path} is not UTF-8 text") from None
    return config_from_yaml(text, str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a repeated class or field is an error here."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key_node.value!r} is repeated in one mapping", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def config_from_yaml(text: str, source: str = "project file") -> ProjectConfig:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    return parse_config(data, source)
