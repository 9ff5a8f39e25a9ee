"""Batches for a model in training: post items with a callback URL, get labels called back
(or poll for them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlmodel import col, select

from llmlabel.api.deps import EngineDep, ProjectAccess, SettingsDep, project_access
from llmlabel.api.importing import import_json_rows
from llmlabel.callbacks import batch_results, check_callback_url, create_batch
from llmlabel.errors import InputError
from llmlabel.store.tables import Item

router = APIRouter(prefix="/api/v1/projects/{name}/batches", tags=["batches"])
Client = Annotated[ProjectAccess, Depends(project_access("admin"))]


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(min_length=1, max_length=10_000, description="items; each may carry a 'deadline'")
    callback_url: str | None = Field(default=None, max_length=2048)


class BatchOut(BaseModel):
    batch_id: int
    items: int
    secret: str = Field(description="HMAC-SHA256 key of the callback signatures; shown once")


class _Deadline(BaseModel):
    deadline: AwareDatetime


@router.post("", response_model=BatchOut, status_code=status.HTTP_201_CREATED)
def post_batch(body: BatchIn, access: Client, engine: EngineDep, settings: SettingsDep) -> BatchOut:
    if body.callback_url is not None:  # refuse before importing anything
        check_callback_url(body.callback_url, allow_private=settings.allow_private_callbacks)
    id_field = access.config.id_field
    deadlines: dict[str, datetime | None] = {}
    rows = []
    for n, raw in enumerate(body.items):
        row = dict(raw)
        deadline = row.pop("deadline", None)
        if deadline is not None:
            try:
                deadline = _Deadline(deadline=deadline).deadline
            except ValueError:
                raise InputError(f"items.{n}.deadline must be an ISO 8601 time with a timezone, got {deadline!r}") from None
        deadlines[str(row.get(id_field, "")).strip()] = deadline
        rows.append(row)
    access.session.commit()  # the import runs in its own transaction
    import_json_rows(engine, project=access.project, config=access.config, rows=rows)
    ids: dict[str, int] = dict(access.session.exec(  # type: ignore[arg-type]  # SQLModel types ids int | None; stored ones never are
        select(col(Item.external_id), col(Item.id)).where(col(Item.project_id) == access.project.id, col(Item.external_id).in_(list(deadlines)))
    ).all())
    created = create_batch(access.session, project=access.project, account_id=access.principal.account_id,
                           item_ids=list(ids.values()), deadlines={ids[e]: d for e, d in deadlines.items()},
                           callback_url=body.callback_url, allow_private=settings.allow_private_callbacks)
    return BatchOut(batch_id=created.batch_id, items=created.items, secret=created.secret)


@router.get("/{batch_id}")
def get_batch(batch_id: int, access: Client) -> dict[str, Any]:
    """Poll: every item's final label, or its best answer once its deadline passed."""
    return batch_results(access.session, project=access.project, batch_id=batch_id)
