"""The one table that turns llmlabel errors into HTTP answers: status and a message that says
what to fix. Nothing else in the API catches errors."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from llmlabel.errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    ConflictError,
    InputError,
    LLMLabelError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    StorageError,
)

STATUS: tuple[tuple[type[LLMLabelError], int], ...] = (
    (AuthenticationError, 401),
    (InputError, 422),
    (ConfigError, 422),
    (ConflictError, 409),
    (NotFoundError, 404),
    (PermissionDeniedError, 403),
    (BudgetExceededError, 409),
    (ProviderError, 502),
    (StorageError, 503),
)


def status_of(exc: LLMLabelError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 400


def install(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LLMLabelError)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status_of(exc), headers=headers)

    app.add_exception_handler(LLMLabelError, handle)
