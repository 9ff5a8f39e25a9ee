"""The one error tree of llmlabel.

Only the shells translate these: the CLI turns any ``LLMLabelError`` into one line and exit
code 1; the API maps them to HTTP statuses in one handler table. Everything else raises them
with enough context (attributes) for the message to say what was wrong and how to fix it.

    LLMLabelError
    ├── ConfigError            a project file or setting is invalid (field path in the message)
    ├── InputError             an imported row, a vote or a request body is invalid
    │   ├── LabelError         a label is not valid for the project's label schema
    │   └── ImportRowsError    an import had bad rows (each one file:line and reason)
    ├── ConflictError          a known id arrived with different content; a late submission
    ├── NotFoundError          a project, item, voter or lease that does not exist
    ├── PermissionDeniedError  a token lacks the role or project membership
    │   └── AuthenticationError  no token, or an unknown or revoked one
    ├── StorageError           the database is unreachable or at an unknown revision
    ├── BudgetExceededError    a run reached its USD budget cap
    └── ProviderError          an LLM call failed for good (carries attempts and last answer)
"""

from __future__ import annotations

from dataclasses import dataclass


class LLMLabelError(Exception):
    """Base of every error llmlabel raises on purpose."""


class ConfigError(LLMLabelError):
    pass


class InputError(LLMLabelError):
    pass


class LabelError(InputError):
    pass


@dataclass(frozen=True)
class RowProblem:
    """One bad row of an input file: where it is and what is wrong with it."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class ImportRowsError(InputError):
    def __init__(self, problems: list[RowProblem], total_bad: int) -> None:
        self.problems = problems
        self.total_bad = total_bad
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (and {total_bad - 3} more)" if total_bad > 3 else ""
        super().__init__(
            f"{total_bad} bad row(s), nothing imported: {shown}{more}. "
            "Fix them, or pass --on-error skip to import the good rows and write the bad ones "
            "to a reject file."
        )


class ConflictError(LLMLabelError):
    pass


class NotFoundError(LLMLabelError):
    pass


class PermissionDeniedError(LLMLabelError):
    pass


class AuthenticationError(PermissionDeniedError):
    pass


class StorageError(LLMLabelError):
    pass


class BudgetExceededError(LLMLabelError):
    pass


class ProviderError(LLMLabelError):
    def __init__(self, message: str, *, attempts: int, last_answer: str | None = None) -> None:
        self.attempts = attempts
        self.last_answer = last_answer
        super().__init__(message)
