"""Annotator tasks: fetch the next one, answer it (idempotently), or hand it back."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from llmlabel.api.deps import ProjectAccess, project_access
from llmlabel.api.schemas import TaskOut, VoteIn, VoteOut
from llmlabel.errors import ConflictError, InputError, NotFoundError
from llmlabel.store import leases
from llmlabel.store.tables import IdempotencyRecord, Lease
from llmlabel.tasks import next_task, submit

router = APIRouter(prefix="/api/v1/projects/{name}/tasks", tags=["tasks"])
Annotator = Annotated[ProjectAccess, Depends(project_access("annotator"))]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=128, description="a replay with the same key returns the first answer"),
]


@router.get("/next", response_model=TaskOut, responses={204: {"description": "no task for you right now"}})
def get_next_task(access: Annotator) -> Any:
    task = next_task(access.session, project=access.project, config=access.config, voter=access.voter())
    if task is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return TaskOut(**task.__dict__)


def _replay(session: Session, account_id: int, key: str, request_hash: str) -> JSONResponse | None:
    record = session.exec(
        select(IdempotencyRecord).where(IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == key)
    ).first()
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise InputError("this Idempotency-Key was used for a different request; use a new key per answer")
    return JSONResponse(record.response, status_code=record.status_code, headers={"Idempotent-Replayed": "true"})


@router.post("/{lease_token}/vote", response_model=VoteOut, status_code=status.HTTP_201_CREATED)
def post_vote(lease_token: str, body: VoteIn, access: Annotator, idempotency_key: IdempotencyKey = None) -> Any:
    """Answer a task. With an Idempotency-Key a replay returns the first answer and stores nothing."""
    session, account = access.session, access.principal.account_id
    digest = hashlib.sha256((lease_token + body.model_dump_json()).encode()).hexdigest()
    if idempotency_key:
        replay = _replay(session, account, idempotency_key, digest)
        if replay is not None:
            return replay
    try:
        result = submit(session, project=access.project, config=access.config, voter=access.voter(),
                        lease_token=lease_token, label=body.label, unsure=body.unsure, comment=body.comment,
                        predicted_distribution=body.predicted_distribution)
    except ConflictError:
        # a concurrent replay may have committed the first answer meanwhile
        replay = _replay(session, account, idempotency_key, digest) if idempotency_key else None
        if replay is not None:
            return replay
        raise
    out = VoteOut(item_id=result.item_id, vote_id=result.vote_id, created=result.created)
    if idempotency_key:
        try:
            with session.begin_nested():
                session.add(IdempotencyRecord(account_id=account, key=idempotency_key, request_hash=digest,
                                              status_code=201, response=out.model_dump()))
        except IntegrityError:
            session.rollback()
            replay = _replay(session, account, idempotency_key, digest)
            if replay is not None:
                return replay
            raise
    return out


@router.post("/{lease_token}/release", status_code=status.HTTP_204_NO_CONTENT)
def release_task(lease_token: str, access: Annotator) -> Response:
    """Hand a task back unanswered: the item returns to the pool (not to you)."""
    voter = access.voter()
    lease = access.session.exec(select(Lease).where(Lease.token == lease_token)).first()
    if lease is None or lease.voter_id != voter.id or lease.project_id != access.project.id:
        raise NotFoundError("no such task for you: the lease token is unknown or belongs to someone else")
    if lease.state != "active":
        raise ConflictError(f"this task is already {lease.state}")
    leases.release(access.session, lease_ids=[lease.id])  # type: ignore[list-item]
    return Response(status_code=status.HTTP_204_NO_CONTENT)
