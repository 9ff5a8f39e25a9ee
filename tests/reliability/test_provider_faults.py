"""30% of provider calls fail (429 with Retry-After, 500, timeouts, connection resets): every
item still gets its vote, no retry arrives before the Retry-After it was given, and an error
that retrying cannot fix (400) is attempted exactly once."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path

from sqlalchemy import func, select

from llmlabel.config import load_config
from llmlabel.ingest import import_items
from llmlabel.labelers.service import label_project
from llmlabel.projects import sync_project
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Vote
from llmlabel.testing import FakeLLMServer, Script, answer, error, faults

ITEMS = 40
RETRY_AFTER = 0.3


def test_flaky_provider_labels_everything_and_respects_retry_after(engine, tmp_path: Path, write_project) -> None:
    script = Script(default=answer({"label": "positive", "rationale": "upbeat"}, probs={"positive": 0.8, "negative": 0.2}))
    script.when("UNFIXABLE", reply=error(400, "this request is malformed"))
    responder = faults(script, p=0.3, seed=7, retry_after=RETRY_AFTER, hang=5.0)
    with FakeLLMServer(responder) as srv:
        path = write_project({
            "name": "flaky",
            "labels": {"type": "single", "classes": ["positive", "negative"]},
            "labelers": [{"name": "flaky-llm", "model": "openai/fake", "confidence": "logprobs",
                          "params": {"api_base": srv.base_url, "api_key": "x"}, "cost": {"per_call": 0.0001},
                          "timeout_seconds": 1.0, "max_attempts": 8, "concurrency": 8}],
        })
        config = load_config(path)
        rows = tmp_path / "items.jsonl"
        rows.write_text("".join(
            json.dumps({"id": f"f{i}", "text": f"review {i}" + (" UNFIXABLE" if i < 2 else "")}) + "\n" for i in range(ITEMS)
        ))
        with session_scope(engine) as s:
            project = sync_project(s, config=config)
        import_items(engine, project=project, config=config, path=rows)
        label_project(engine, config=config, project_id=project.id)
        requests = list(srv.requests)

    with engine.connect() as conn:
        votes = conn.execute(select(func.count()).select_from(Vote).where(Vote.label.is_not(None))).scalar_one()
        abstained = conn.execute(select(func.count()).select_from(Vote).where(Vote.label.is_(None))).scalar_one()
    assert votes == ITEMS - 2, f"every fixable item labeled: {votes} votes"
    assert abstained == 2, "the two unfixable items become abstentions with the provider's reason"

    by_body: dict[bytes, list] = defaultdict(list)
    for r in requests:
        by_body[r.raw].append(r)
    statuses = [r.status for r in requests]
    assert statuses.count(429) + statuses.count(500) >= 5, f"the fault injection should have fired: {statuses}"
    for attempts in by_body.values():
        if "UNFIXABLE" in attempts[0].last_user_message:
            # injected faults may come first and are retried; the 400 ends it at once
            assert [a.status for a in attempts].count(400) == 1 and attempts[-1].status == 400, "a 400 must not be retried"
        for before, after in itertools.pairwise(attempts):
            if before.status == 429:
                waited = after.received_at - before.received_at
                assert waited >= RETRY_AFTER - 0.02, f"retried {waited:.3f} s after a 429 with Retry-After {RETRY_AFTER}"
