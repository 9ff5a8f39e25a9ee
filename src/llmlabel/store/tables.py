"""Database tables. Labels are stored in their canonical JSON form (see ``llmlabel.schema``).

Invariants the database itself enforces, so that no code path can break them:
- one item per (project, external id): re-imports are idempotent;
- one vote per (item, voter): a replayed submission or a resumed LLM run cannot double-count;
- one lease per (item, voter): an annotator never gets the same item twice;
- one gold label per item.

Times are timezone-aware UTC; SQLModel's ``UTCDateTime`` stores them the same way on SQLite
and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=nullable))


class Project(SQLModel, table=True):
    __tablename__ = "projects"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    config_hash: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow)


class ProjectConfigVersion(SQLModel, table=True):
    """Every config a project has run with, kept by content hash, so a vote's context is known."""

    __tablename__ = "project_configs"
    __table_args__ = (UniqueConstraint("project_id", "hash"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    hash: str = Field(max_length=32)
    body: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Item(SQLModel, table=True):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        # serves the claim's ORDER BY priority DESC, id: most items share one priority
        Index("ix_items_queue", "project_id", "status", text("priority DESC"), "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id")
    external_id: str = Field(max_length=256)
    fields: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    content_hash: str = Field(max_length=32)
    status: str = Field(default="open", max_length=16)  # open | final | escalated
    vote_count: int = 0
    votes_needed: int = 1  # more human votes wanted now; caps concurrent human leases
    next_kind: str | None = Field(default=None, max_length=16)  # voter kind the engine asks next
    conflict_kind: str | None = Field(default=None, max_length=16)  # who disagrees, when escalated
    final_label: Any = _json()
    confidence: float | None = None
    decided_by: str | None = Field(default=None, max_length=16)  # consensus | adjudication | auto
    decided_level: int | None = None
    posterior: Any = _json()
    priority: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None


class Gold(SQLModel, table=True):
    __tablename__ = "gold"
    # a gold task's pick walks a project's gold in item order from a random pivot
    __table_args__ = (Index("ix_gold_project_item", "project_id", "item_id"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id")
    item_id: int = Field(foreign_key="items.id", unique=True)
    label: Any = _json(nullable=False)
    source: str = Field(default="imported", max_length=16)  # imported | mined | adjudicated
    weight: float = 1.0
    split: str = Field(default="dev", max_length=8)  # dev | test
    created_at: datetime = Field(default_factory=utcnow)


class Voter(SQLModel, table=True):
    __tablename__ = "voters"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    name: str = Field(max_length=128)
    kind: str = Field(max_length=16)  # human | expert | llm | model
    status: str = Field(default="active", max_length=16)  # qualifying | active | gated
    created_at: datetime = Field(default_factory=utcnow)


class Vote(SQLModel, table=True):
    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("item_id", "voter_id"),
        # a voter's answers to gold, read on every task request to gate annotators: an index of
        # those alone, so that read does not grow with everything the voter ever answered
        Index("ix_votes_gold_answers", "voter_id", "id", sqlite_where=text("on_gold = 1"), postgresql_where=text("on_gold")),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    voter_id: int = Field(foreign_key="voters.id", index=True)
    label: Any = _json()  # None = abstention
    abstain_reason: str | None = None
    confidence: float | None = None
    confidence_method: str | None = Field(default=None, max_length=16)
    probs: Any = _json()
    rationale: str | None = None
    latency_ms: float | None = None
    cost_usd: float = 0.0
    prompt_version: str | None = Field(default=None, max_length=32)
    unsure: bool = False
    comment: str | None = None
    predicted_distribution: Any = _json()
    on_gold: bool = False  # the item has gold: set when either the vote or the gold is stored
    created_at: datetime = Field(default_factory=utcnow)


class Lease(SQLModel, table=True):
    """A claim on an item by a voter until ``expires_at``; the same rows serve humans and LLMs."""

    __tablename__ = "leases"
    __table_args__ = (
        UniqueConstraint("item_id", "voter_id"),
        Index("ix_leases_active", "project_id", "state", "expires_at"),
        Index("ix_leases_voter_state", "voter_id", "state", "expires_at"),  # a voter's live lease
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id")
    item_id: int = Field(foreign_key="items.id", index=True)
    voter_id: int = Field(foreign_key="voters.id")
    token: str = Field(unique=True, max_length=64)
    state: str = Field(default="active", max_length=16)  # active | done | expired
    is_human: bool = False
    is_gold: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class LLMCall(SQLModel, table=True):
    """The ledger: every provider call, its cost and outcome; also the cache of answers."""

    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_cache", "request_hash", "outcome"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    labeler: str = Field(max_length=64)
    model: str = Field(max_length=256)
    prompt_version: str = Field(max_length=32)
    request_hash: str = Field(max_length=64)
    run_id: str | None = Field(default=None, max_length=64, index=True)
    outcome: str = Field(max_length=16)  # ok | error
    error: str | None = None
    response: Any = _json()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)


class Adjudication(SQLModel, table=True):
    __tablename__ = "adjudications"

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    reviewer_id: int = Field(foreign_key="voters.id")
    label: Any = _json(nullable=False)
    blind_label: Any = _json()
    note: str = ""
    conflict_kind: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    kind: str = Field(max_length=32)
    subject: str | None = Field(default=None, max_length=128)
    value: float | None = None
    low: float | None = None
    high: float | None = None
    message: str
    created_at: datetime = Field(default_factory=utcnow)
    acknowledged_at: datetime | None = None


class Account(SQLModel, table=True):
    """Someone (or some script) with API tokens: an admin, a reviewer or an annotator."""

    __tablename__ = "accounts"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=128)
    role: str = Field(max_length=16)  # admin | reviewer | annotator
    created_at: datetime = Field(default_factory=utcnow)


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("account_id", "project_id"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="accounts.id", index=True)
    project_id: int = Field(foreign_key="projects.id", index=True)


class ApiToken(SQLModel, table=True):
    """Only a hash is kept: the token itself is shown once, when it is created."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="accounts.id", index=True)
    token_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=12)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to a request carrying an Idempotency-Key, replayed for any repeat."""

    __tablename__ = "idempotency"
    __table_args__ = (UniqueConstraint("account_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="accounts.id")
    key: str = Field(max_length=128)
    request_hash: str = Field(max_length=64)
    status_code: int
    response: Any = _json(nullable=False)
    created_at: datetime = Field(default_factory=utcnow)


class Batch(SQLModel, table=True):
    """Items posted by a client (a model in training) that wants each label called back."""

    __tablename__ = "batches"

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    account_id: int = Field(foreign_key="accounts.id")
    callback_url: str | None = Field(default=None, max_length=2048)
    secret: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow)


class BatchItem(SQLModel, table=True):
    __tablename__ = "batch_items"
    __table_args__ = (UniqueConstraint("batch_id", "item_id"),)

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="batches.id", index=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    deadline: datetime | None = None
    delivered_at: datetime | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    payload: Any = _json()
