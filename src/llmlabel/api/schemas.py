"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Label = str | list[str] | int


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenIn(_In):
    name: str = Field(min_length=1, max_length=128)
    role: str = Field(pattern="^(admin|reviewer|annotator)$")
    projects: list[str] = Field(default_factory=list, max_length=1000)


class TokenOut(BaseModel):
    name: str
    role: str
    token: str = Field(description="shown once; only its hash is stored")


class ProjectIn(_In):
    config: dict[str, Any] = Field(description="the project file as JSON")


class ProjectOut(BaseModel):
    name: str
    config_hash: str
    items: int
    by_status: dict[str, int]
    gold: int
    votes: int
    llm_cost_usd: float


class VoterOut(BaseModel):
    name: str
    kind: str
    state: str
    votes: int
    abstentions: int
    cost_usd: float


class ProjectStatusOut(ProjectOut):
    voters: list[VoterOut]


class ItemsIn(_In):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    gold_field: str | None = None
    on_error: str = Field(default="fail", pattern="^(fail|skip)$")


class ImportOut(BaseModel):
    rows: int
    inserted: int
    unchanged: int
    gold_inserted: int
    bad: int
    problems: list[str]


class TaskOut(BaseModel):
    lease_token: str
    item_id: str
    text: str
    fields: dict[str, Any]
    choices: list[Any]
    instructions: str
    expires_at: datetime
    suggestions: list[dict[str, Any]] = Field(default_factory=list)


class VoteIn(_In):
    label: Label
    unsure: bool = False
    comment: str | None = Field(default=None, max_length=5000)
    predicted_distribution: dict[str, float] | None = Field(
        default=None, description="how the annotator thinks others would answer (Bayesian Truth Serum)"
    )


class VoteOut(BaseModel):
    item_id: str
    vote_id: int
    created: bool


class CaseVoteOut(BaseModel):
    voter: str
    kind: str
    label: Any
    confidence: float | None
    reliability: float | None
    rationale: str | None
    unsure: bool
    comment: str | None


class CaseOut(BaseModel):
    item_id: str
    text: str
    fields: dict[str, Any]
    conflict_kind: str
    posterior: Any
    blind: bool
    votes: list[CaseVoteOut]


class LabelIn(_In):
    label: Label


class ResolutionIn(_In):
    label: Label
    note: str = Field(default="", max_length=5000)


class ItemOut(BaseModel):
    item_id: str
    fields: dict[str, Any]
    status: str
    label: Any
    confidence: float | None
    decided_by: str | None
    posterior: Any
    votes: list[CaseVoteOut]


class RefitOut(BaseModel):
    items: int
    votes: int
    gold: int
    by_status: dict[str, int]
    calibration_method: str | None
    ece_before: float | None
    ece_after: float | None
    seconds: float
