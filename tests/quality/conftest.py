"""A seeded project for the store-facing quality tests: simulated annotators and LLM labelers
with known accuracies, gold on a quarter of the items, consensus already decided.

Rows go in through SQLAlchemy Core ``executemany`` (the same statements on SQLite and
PostgreSQL), so a few thousand votes cost milliseconds rather than the API's per-vote path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from llmlabel import decisions
from llmlabel.config import ProjectConfig, parse_config
from llmlabel.projects import sync_project
from llmlabel.simulate import Population, simulate_votes
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Gold, Item, LLMCall, Project, Vote, Voter, utcnow
from llmlabel.votes import mark_gold_answers

CLASSES = ["positive", "negative", "neutral"]


def config_dict(name: str = "quality", **policy: Any) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {"type": "single", "classes": CLASSES},
        "item_template": "{{ text }}",
        "labelers": [{"name": "gpt", "model": "openai/fake", "params": {"api_base": "http://127.0.0.1:9/v1"}}],
        "policy": {"qualification_tasks": 0, "gold_rate": 0.0, "quality_bar": 0.6, **policy},
    }


@dataclass
class Seeded:
    engine: Engine
    config: ProjectConfig
    project: Project
    truth: np.ndarray  # per item index
    item_ids: list[int]
    voter_ids: dict[str, int]
    path: Path


def seed_project(
    engine: Engine, tmp_path: Path, *, n_items: int = 240, humans: int = 6, llms: int = 2, days: float = 8.0,
    gold_every: int = 4, seed: int = 0, refit: bool = True, name: str = "quality", **policy: Any,
) -> Seeded:
    cfg_dict = config_dict(name, **policy)
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump(cfg_dict), encoding="utf-8")
    config = parse_config(cfg_dict)
    pops = [Population(humans, kind="human", per_item=3, accuracy=(6.0, 3.0))]
    if llms:
        pops.append(Population(llms, kind="llm", per_item=llms, accuracy=(8.0, 3.0), confident=True))
    sim = simulate_votes(n_items, len(CLASSES), pops, seed=seed)
    rng = np.random.default_rng(seed)
    now = utcnow()
    with session_scope(engine) as s:
        project = sync_project(s, config=config)
        pid = project.id
        s.execute(insert(Item), [
            {"project_id": pid, "external_id": f"i{i:05d}", "fields": {"text": f"item {i}"}, "content_hash": f"h{i}",
             "created_at": now, "updated_at": now} for i in range(n_items)])
        item_ids = list(s.execute(select(Item.id).where(Item.project_id == pid).order_by(Item.id)).scalars())
        names = [f"h{v}" for v in range(humans)] + [f"llm{v}" for v in range(llms)]
        kinds = ["human"] * humans + ["llm"] * llms
        s.execute(insert(Voter), [{"project_id": pid, "name": n, "kind": k, "status": "active", "created_at": now}
                                  for n, k in zip(names, kinds, strict=True)])
        voter_ids = dict(s.execute(select(Voter.name, Voter.id).where(Voter.project_id == pid)).all())
        v = sim.votes
        ages = rng.random(len(v)) * days
        rows = []
        for j in range(len(v)):
            name = names[int(v.voter[j])]
            human = name.startswith("h")
            rows.append({
                "project_id": pid, "item_id": item_ids[int(v.item[j])], "voter_id": voter_ids[name],
                "label": CLASSES[int(v.label[j])], "confidence": None if human else float(v.conf[j]),
                "latency_ms": float(rng.gamma(4.0, 2500.0)) if human else 800.0,
                "cost_usd": 0.0 if human else 0.0004, "prompt_version": None if human else "p1",
                "created_at": now - timedelta(days=float(ages[j])),
            })
        s.execute(insert(Vote), rows)
        s.execute(insert(LLMCall), [
            {"project_id": pid, "labeler": names[int(v.voter[j])], "model": "openai/fake", "prompt_version": "p1",
             "request_hash": f"{pid}-{j}", "run_id": "seed", "outcome": "ok", "prompt_tokens": 120, "completion_tokens": 8,
             "cost_usd": 0.0004, "latency_ms": 800.0, "created_at": rows[j]["created_at"]}
            for j in range(len(v)) if not names[int(v.voter[j])].startswith("h")])
        gold_rows = [{"project_id": pid, "item_id": item_ids[i], "label": CLASSES[int(sim.truth[i])],
                      "split": "dev" if (i // gold_every) % 3 else "test", "created_at": now}
                     for i in range(0, n_items, gold_every)]
        if gold_rows:
            s.execute(insert(Gold), gold_rows)
            mark_gold_answers(s, item_ids=[row["item_id"] for row in gold_rows])
    decisions._fits.clear()
    if refit:
        with session_scope(engine) as s:
            project = s.get(Project, pid)  # type: ignore[assignment]
            decisions.refit(s, project=project, config=config)
    with session_scope(engine) as s:
        project = s.get(Project, pid)  # type: ignore[assignment]
    return Seeded(engine, config, project, sim.truth, item_ids, voter_ids, path)


@pytest.fixture
def seeded(engine: Engine, tmp_path: Path) -> Seeded:
    return seed_project(engine, tmp_path)
