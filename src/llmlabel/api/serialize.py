"""One request at a time per process on SQLite, queued before it takes a worker thread.

SQLite admits one writer, and every request here writes (a lease, a vote, a token lookup
that may create a voter). Left to the thread pool, requests would each take a thread and
then block in ``BEGIN IMMEDIATE``; once every thread is blocked that way, the request holding
the lock cannot get a thread for its next step, and everything waits out the busy timeout.
Queueing on an asyncio lock instead keeps threads free for the request that holds the
database. Other processes on the same file still meet at SQLite's own lock, where each one's
single in-flight request can always proceed. PostgreSQL does not need this.
"""

from __future__ import annotations

import asyncio
from typing import Any


class SerializeRequests:
    def __init__(self, app: Any, lock: asyncio.Lock) -> None:
        self.app = app
        self.lock = lock  # shared with the server's batched re-decisions, which write too

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with self.lock:
            await self.app(scope, receive, send)
