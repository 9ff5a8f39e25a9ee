"""Schemathesis against the OpenAPI document: valid and invalid requests to every operation,
with real tokens and a seeded project, and never a 5xx."""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from llmlabel.api import ApiSettings, create_app

from .conftest import Api, human_vote, llm_vote, reviews

EXAMPLES = 30  # per operation and generation mode: > 1,000 cases in all


def seed(api: Api) -> dict[str, str]:
    """Project p with items, gold, votes, an escalated case and a lease; the values to aim at."""
    api.project("p", max_votes=2, min_human_votes=0)
    api.items("p", [{**r, "gold": "positive" if i < 3 else ""} for i, r in enumerate(reviews(12))], gold_field="gold")
    llm_vote(api, "p", "r0005", "positive", "gpt")
    human_vote(api, "p", "r0005", "negative", "bob")
    assert api.client.post("/api/v1/projects/p/consensus", headers=api.admin).status_code == 200
    ann = api.token("ann", "annotator", ["p"])
    lease = api.task("p", ann)["lease_token"]
    return {"name": "p", "item_id": "r0005", "lease_token": lease, "batch_id": "1", "alert_id": "1",
            "annotator": ann["Authorization"]}


def test_no_generated_request_gets_a_5xx(api: Api) -> None:
    real = seed(api)
    app = create_app(api.engine, ApiSettings(callback_interval_seconds=0))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    calls: list[tuple[str, int]] = []
    failures: list[str] = []

    def run(operation: Any, mode: GenerationMode) -> None:
        headers = {"Authorization": real["annotator"] if "/tasks/" in operation.path else api.admin["Authorization"]}

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans())
        def check(case: Any, aim: bool) -> None:
            if aim:  # half the cases go to things that exist
                for key in case.path_parameters or {}:
                    case.path_parameters[key] = real.get(key, case.path_parameters[key])
            try:
                response = case.call_and_validate(headers=headers, checks=[not_a_server_error])
                calls.append((operation.label, response.status_code))
            except Exception as exc:
                calls.append((operation.label, 500))
                failures.append(f"{operation.label}: {str(exc)[:500]}")

        try:
            check()
        except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, operation.label

    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run(operation, mode)
    seconds = time.monotonic() - started
    by_status: dict[int, int] = {}
    for _, status in calls:
        by_status[status] = by_status.get(status, 0) + 1
    print(f"{len(calls)} cases in {seconds:.1f} s: {dict(sorted(by_status.items()))}")
    assert not failures, "\n".join(failures[:10])
    assert len(calls) >= 1000, f"only {len(calls)} cases"
    assert seconds < 120
    answered = {status for _, status in calls}
    assert answered & {200, 201, 204}, "no generated request got through: aim the cases better"
