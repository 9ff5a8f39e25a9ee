"""Re-decisions deferred by the annotator routes, applied before anything reads decisions.

Under load the server re-decides voted items in batches (``decisions.defer_decisions``): an
annotator's vote returns as soon as it is stored, and its item is re-decided with the others
voted on in the same few milliseconds. Every other request (item reads, review, exports,
dashboards, the web pages) first applies what this process still owes, so a client that
reads after it voted sees the decision its vote led to. The annotator's own task routes skip
that: their next task cannot be an item they just voted on, and the human votes an item
still wants were already counted down by the vote.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import Engine

from llmlabel import decisions

_TASK_ROUTE = re.compile(r"^/api/v1/projects/[^/]+/tasks/")


class ApplyDeferred:
    def __init__(self, app: Any, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not _TASK_ROUTE.match(scope["path"]) and decisions.has_deferred(self.engine):
            decisions.apply_deferred(self.engine)
        await self.app(scope, receive, send)
