"""The closed loop for a model in training: it posts items with a callback URL and gets each
item's label POSTed back when decided, or its best answer at the item's deadline.

Deliveries are signed (HMAC-SHA256 over the timestamp and body, with the batch's secret) so
the receiver can trust them, retried with exponential backoff until acknowledged with a 2xx,
and can always be polled instead. Callback URLs that resolve to private, loopback or other
internal addresses are refused unless the admin allows them: otherwise any API client could
make the server probe the network it sits in (SSRF). The address is checked again at each
delivery, since DNS can change between the two.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from llmlabel.errors import InputError, NotFoundError
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Batch, BatchItem, Item, Project, utcnow

MAX_ATTEMPTS = 8
SIGNATURE_HEADER = "X-LLMLabel-Signature"
TIMESTAMP_HEADER = "X-LLMLabel-Timestamp"


def check_callback_url(url: str, *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"callback_url {url!r} must be an http(s) URL with a host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror:
        raise InputError(f"callback_url host {parts.hostname!r} does not resolve") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not addr.is_global:
            raise InputError(
                f"callback_url {url!r} resolves to {addr}, a private, loopback or reserved address; "
                "an admin can allow those with `llmlabel serve --allow-private-callbacks`"
            )


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass
class BatchCreated:
    batch_id: int
    secret: str
    items: int


def create_batch(
    session: Session, *, project: Project, account_id: int, item_ids: list[int], deadlines: dict[int, datetime | None],
    callback_url: str | None, allow_private: bool,
) -> BatchCreated:
    if callback_url is not None:
        check_callback_url(callback_url, allow_private=allow_private)
    secret = secrets.token_urlsafe(32)
    batch = Batch(project_id=project.id, account_id=account_id, callback_url=callback_url, secret=secret)  # type: ignore[arg-type]
    session.add(batch)
    session.flush()
    for item_id in item_ids:
        session.add(BatchItem(batch_id=batch.id, item_id=item_id, deadline=deadlines.get(item_id)))  # type: ignore[arg-type]
    session.flush()
    return BatchCreated(batch_id=batch.id, secret=secret, items=len(item_ids))  # type: ignore[arg-type]


def result_of(item: Item, deadline: datetime | None, now: datetime) -> dict[str, Any] | None:
    """What to tell the client about an item now, or None if there is nothing to tell yet."""
    if item.status == "final":
        return {"item_id": item.external_id, "label": item.final_label, "confidence": item.confidence,
                "status": "final", "decided_by": item.decided_by, "at_deadline": False}
    if deadline is not None and now >= deadline:
        best = None
        if item.posterior:
            best = max(item.posterior, key=item.posterior.get)
        return {"item_id": item.external_id, "label": best, "confidence": item.confidence,
                "status": item.status, "decided_by": None, "at_deadline": True}
    return None


def batch_results(session: Session, *, project: Project, batch_id: int) -> dict[str, Any]:
    batch = session.get(Batch, batch_id)
    if batch is None or batch.project_id != project.id:
        raise NotFoundError(f"no batch {batch_id} in project {project.name!r}")
    now = utcnow()
    rows = session.exec(
        select(BatchItem, Item).join(Item, col(Item.id) == BatchItem.item_id).where(BatchItem.batch_id == batch_id)
        .order_by(col(BatchItem.id))
    ).all()
    results = []
    for bi, item in rows:
        res = result_of(item, bi.deadline, now) or {"item_id": item.external_id, "status": item.status, "label": None}
        res["delivered"] = bi.delivered_at is not None
        results.append(res)
    return {"batch_id": batch_id, "callback_url": batch.callback_url, "items": results,
            "done": sum(1 for r in results if r.get("label") is not None or r["status"] == "final")}


def deliver_due(engine: Engine, *, allow_private: bool, client: httpx.Client | None = None, limit: int = 100) -> int:
    """Deliver every callback that is due (decided or past its deadline); returns how many landed."""
    now = utcnow()
    with session_scope(engine) as session:
        rows = session.exec(
            select(BatchItem, Batch, Item)
            .join(Batch, col(Batch.id) == BatchItem.batch_id)
            .join(Item, col(Item.id) == BatchItem.item_id)
            .where(col(BatchItem.delivered_at).is_(None), col(Batch.callback_url).is_not(None),
                   col(BatchItem.attempts) < MAX_ATTEMPTS,
                   or_(col(BatchItem.next_attempt_at).is_(None), col(BatchItem.next_attempt_at) <= now))
            .where(or_(col(Item.status) == "final", col(BatchItem.deadline) <= now))
            .limit(limit)
        ).all()
        work = [(bi.id, b.callback_url, b.secret, b.id, result_of(item, bi.deadline, now)) for bi, b, item in rows]
    if not work:
        return 0
    owns_client = client is None
    client = client or httpx.Client(timeout=10.0, follow_redirects=False)
    delivered = 0
    try:
        outcomes = []
        for bi_id, url, secret, batch_id, payload in work:
            assert url is not None  # the query selects only batches with a callback URL
            body = json.dumps({"batch_id": batch_id, **(payload or {})}).encode()
            stamp = str(int(time.time()))
            error = None
            try:
                check_callback_url(url, allow_private=allow_private)
                resp = client.post(url, content=body, headers={
                    "Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, stamp, body), TIMESTAMP_HEADER: stamp})
                if not 200 <= resp.status_code < 300:
                    error = f"callback answered {resp.status_code}"
            except (httpx.HTTPError, InputError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            outcomes.append((bi_id, payload, error))
            delivered += error is None
    finally:
        if owns_client:
            client.close()
    with session_scope(engine) as session:
        for bi_id, payload, error in outcomes:
            bi = session.get(BatchItem, bi_id)
            assert bi is not None
            bi.attempts += 1
            bi.payload = payload
            if error is None:
                bi.delivered_at, bi.last_error = utcnow(), None
            else:  # exponential backoff with jitter: 1 s, 2 s, 4 s, … capped at 5 minutes
                delay = min(300.0, 2 ** (bi.attempts - 1)) * (0.75 + secrets.randbelow(500) / 1000)
                bi.last_error, bi.next_attempt_at = error, utcnow() + timedelta(seconds=delay)
            session.add(bi)
    return delivered
