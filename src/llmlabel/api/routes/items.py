"""Items: import through the API (the same import path as the CLI) and inspect one item."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from sqlmodel import select

from llmlabel.adjudication import case_votes
from llmlabel.api.deps import EngineDep, ProjectAccess, project_access
from llmlabel.api.importing import import_json_rows
from llmlabel.api.schemas import CaseVoteOut, ImportOut, ItemOut, ItemsIn
from llmlabel.decisions import voter_reliabilities
from llmlabel.errors import NotFoundError
from llmlabel.store.tables import Item

router = APIRouter(prefix="/api/v1/projects/{name}/items", tags=["items"])
Admin = Annotated[ProjectAccess, Depends(project_access("admin"))]
Staff = Annotated[ProjectAccess, Depends(project_access("admin", "reviewer"))]


@router.post("", response_model=ImportOut, status_code=status.HTTP_201_CREATED)
def post_items(body: ItemsIn, access: Admin, engine: EngineDep) -> ImportOut:
    """Import items (and gold, with ``gold_field``); ids already known with the same content are
    left alone, with different content reported as conflicts."""
    access.session.commit()  # the import runs in its own transaction
    report = import_json_rows(engine, project=access.project, config=access.config, rows=body.items,
                              on_error=body.on_error, gold_field=body.gold_field)  # type: ignore[arg-type]
    problems = [f"item {p.line}: {p.reason}" for p in report.problems]
    return ImportOut(rows=report.rows, inserted=report.inserted, unchanged=report.unchanged,
                     gold_inserted=report.gold_inserted, bad=report.bad, problems=problems)


@router.get("/{item_id}", response_model=ItemOut)
def get_item(item_id: str, access: Staff) -> ItemOut:
    """An item with its decision and every vote (staff only: annotators never see votes)."""
    item = access.session.exec(
        select(Item).where(Item.project_id == access.project.id, Item.external_id == item_id)
    ).first()
    if item is None:
        raise NotFoundError(f"no item {item_id!r} in project {access.project.name!r}")
    votes = case_votes(access.session, item.id, voter_reliabilities(access.session, project=access.project, config=access.config))  # type: ignore[arg-type]
    return ItemOut(item_id=item.external_id, fields=item.fields, status=item.status, label=item.final_label,
                   confidence=item.confidence, decided_by=item.decided_by, posterior=item.posterior,
                   votes=[CaseVoteOut(**v.__dict__) for v in votes])
