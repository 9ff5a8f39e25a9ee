"""Adjudication for reviewers: the queue, the next case, blind answers, resolutions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from llmlabel.adjudication import answer_blind, next_case, queue_counts, resolve
from llmlabel.api.deps import ProjectAccess, project_access
from llmlabel.api.schemas import CaseOut, CaseVoteOut, ItemOut, LabelIn, ResolutionIn

router = APIRouter(prefix="/api/v1/projects/{name}/review", tags=["review"])
Reviewer = Annotated[ProjectAccess, Depends(project_access("reviewer", "admin"))]


@router.get("/queue", response_model=dict[str, int])
def get_queue(access: Reviewer) -> dict[str, int]:
    """Escalated items per kind of conflict."""
    return queue_counts(access.session, project=access.project)


@router.get("/next", response_model=CaseOut, responses={204: {"description": "nothing escalated"}})
def get_next_case(
    access: Reviewer,
    kind: Annotated[str | None, Query(description="llm_vs_llm | llm_vs_human | human_vs_human | none")] = None,
) -> Any:
    case = next_case(access.session, project=access.project, config=access.config, reviewer=access.voter(), kind=kind)
    if case is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return CaseOut(**{**case.__dict__, "votes": [CaseVoteOut(**v.__dict__) for v in case.votes]})


@router.post("/{item_id}/blind", status_code=status.HTTP_204_NO_CONTENT)
def post_blind(item_id: str, body: LabelIn, access: Reviewer) -> Response:
    """The reviewer's own answer before seeing the votes (projects with blind review)."""
    answer_blind(access.session, project=access.project, config=access.config, reviewer=access.voter(),
                 item_external_id=item_id, label=body.label)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{item_id}/resolve", response_model=ItemOut)
def post_resolution(item_id: str, body: ResolutionIn, access: Reviewer) -> ItemOut:
    """Settle an escalated item: it becomes final and gold, and reliability refits."""
    item = resolve(access.session, project=access.project, config=access.config, reviewer=access.voter(),
                   item_external_id=item_id, label=body.label, note=body.note)
    return ItemOut(item_id=item.external_id, fields=item.fields, status=item.status, label=item.final_label,
                   confidence=item.confidence, decided_by=item.decided_by, posterior=item.posterior, votes=[])
