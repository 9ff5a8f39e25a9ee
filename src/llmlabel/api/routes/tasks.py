"""Annotator tasks: fetch the next one, answer it (idempotently), or hand it back."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from llmlabel.api.deps import CallerDep
from llmlabel.api.schemas import TaskOut, VoteIn, VoteOut
from llmlabel.errors import ConflictError, InputError
from llmlabel.store.prepared import Prepared, dialect_name
from llmlabel.store.tables import IdempotencyRecord, utcnow
from llmlabel.tasks import Task, next_task, release, submit

router = APIRouter(prefix="/api/v1/projects/{name}/tasks", tags=["tasks"])
ANNOTATOR = ("annotator",)
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=128, description="a replay with the same key returns the first answer"),
]


@router.get("/next", response_model=TaskOut, responses={204: {"description": "no task for you right now"}})
async def get_next_task(name: str, caller: CallerDep) -> Any:
    def work(session: Session) -> Task | None:
        access = caller.access(session, name=name, roles=ANNOTATOR)
        return next_task(session, project=access.project, config=access.config, voter=access.voter())

    task = caller.run(work)
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


def _insert_new_key(dialect: Any) -> Prepared:
    table = IdempotencyRecord.__table__  # type: ignore[attr-defined]
    return Prepared(dialect.insert(table).on_conflict_do_nothing(index_elements=["account_id", "key"]).returning(table.c.id))


_REMEMBER = {"postgresql": _insert_new_key(postgresql), "sqlite": _insert_new_key(sqlite)}  # built once


def _remember(session: Session, account_id: int, key: str, request_hash: str, out: VoteOut) -> bool:
    """Store the answer under its key; False if the key already holds one (a concurrent replay)."""
    stmt = _REMEMBER[dialect_name(session)]
    row = {"account_id": account_id, "key": key, "request_hash": request_hash, "status_code": 201,
           "response": out.model_dump(), "created_at": utcnow()}
    return stmt.first(session, row) is not None


@router.post("/{lease_token}/vote", response_model=VoteOut, status_code=status.HTTP_201_CREATED)
async def post_vote(
    name: str, lease_token: str, body: VoteIn, caller: CallerDep, idempotency_key: IdempotencyKey = None,
) -> Any:
    """Answer a task. With an Idempotency-Key a replay returns the first answer and stores nothing."""
    digest = hashlib.sha256((lease_token + body.model_dump_json()).encode()).hexdigest()

    def work(session: Session) -> Any:
        access = caller.access(session, name=name, roles=ANNOTATOR)
        account = access.principal.account_id
        try:
            result = submit(session, project=access.project, config=access.config, voter=access.voter(),
                            lease_token=lease_token, label=body.label, unsure=body.unsure, comment=body.comment,
                            predicted_distribution=body.predicted_distribution)
        except ConflictError:
            # the lease is answered: by the first of these requests, if it carried this key
            replay = _replay(session, account, idempotency_key, digest) if idempotency_key else None
            if replay is not None:
                return replay
            raise
        out = VoteOut(item_id=result.item_id, vote_id=result.vote_id, created=result.created)
        if idempotency_key and not _remember(session, account, idempotency_key, digest, out):
            # the key was used before; the vote above must not count: undo it, answer as the key says
            session.rollback()
            replay = _replay(session, account, idempotency_key, digest)
            if replay is not None:
                return replay
            raise ConflictError("this Idempotency-Key was just used by another request; retry")
        return out

    return caller.run(work)


@router.post("/{lease_token}/release", status_code=status.HTTP_204_NO_CONTENT)
async def release_task(name: str, lease_token: str, caller: CallerDep) -> Response:
    """Hand a task back unanswered: the item returns to the pool (not to you)."""

    def work(session: Session) -> None:
        access = caller.access(session, name=name, roles=ANNOTATOR)
        release(session, project=access.project, voter=access.voter(), lease_token=lease_token)

    caller.run(work)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
