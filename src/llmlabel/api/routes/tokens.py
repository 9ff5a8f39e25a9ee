"""API tokens (admins only). A token is returned once; only its hash is kept."""

from __future__ import annotations

from fastapi import APIRouter, status

from llmlabel.access import create_token, visible_project
from llmlabel.api.deps import PrincipalDep, SessionDep
from llmlabel.api.schemas import TokenIn, TokenOut
from llmlabel.errors import PermissionDeniedError

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.post("", response_model=TokenOut, status_code=status.HTTP_201_CREATED)
def new_token(body: TokenIn, session: SessionDep, principal: PrincipalDep) -> TokenOut:
    if principal.role != "admin":
        raise PermissionDeniedError("creating tokens needs the admin role")
    projects = [visible_project(session, principal=principal, name=n, roles=("admin",)) for n in body.projects]
    token = create_token(session, name=body.name, role=body.role, projects=projects)
    return TokenOut(name=body.name, role=body.role, token=token)
