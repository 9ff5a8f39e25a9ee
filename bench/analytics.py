"""Quality analytics at scale: seconds and peak memory of the three heavy paths.

    python bench/analytics.py                   # all three, each in a fresh process
    python bench/analytics.py eval|agreement|report [--items N]

* ``eval``: ``llmlabel eval`` over 5,000 gold items whose answers are all in the ledger (a
  first, untimed run against the loopback fake server fills it), then the metrics with 1,000
  bootstrap resamples and the stored run;
* ``agreement``: 100,000 simulated votes (25,000 items, 3 of 50 annotators + 1 of 2 LLMs each,
  10% gold) read from SQLite, then α (humans, all), Fleiss' κ, Cohen's κ per pair, LLM vs human,
  per voter — each interval from up to 1,000 resamples (``affordable_boot``: 800 at this size);
* ``report``: the HTML report over 1,000,000 votes (250,000 items, 3 of 200 annotators + 1 of 3
  LLMs, 5,000 gold), consensus decided beforehand by ``refit`` (untimed).

Data is seeded straight into SQLite with ``executemany`` (setup, not timed). Peak memory is the
process's peak RSS during the timed part (Linux: the high-water mark is reset through
``/proc/self/clear_refs`` before it starts), next to the RSS before it. Goal: each under 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from llmlabel.config import ProjectConfig, parse_config  # noqa: E402
from llmlabel.projects import sync_project  # noqa: E402
from llmlabel.simulate import Population, simulate_votes  # noqa: E402
from llmlabel.store.db import open_engine, session_scope  # noqa: E402
from llmlabel.store.tables import Project  # noqa: E402

CLASSES = ["positive", "negative", "neutral"]
GOAL_SECONDS = 10.0


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(name: str, fn: Callable[[], Any], **extra: Any) -> dict[str, Any]:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
    before = _rss_kb("VmRSS")
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    row = {"phase": name, "seconds": round(seconds, 2), "peak_rss_mb": round(_rss_kb("VmHWM") / 1024, 1),
           "rss_before_mb": round(before / 1024, 1), "goal_met": seconds < GOAL_SECONDS, **extra}
    print(json.dumps(row), flush=True)
    return row


def project(tmp: Path, name: str, labelers: list[dict[str, Any]] | None = None) -> tuple[Any, ProjectConfig, Project, Path]:
    db = tmp / f"{name}.db"
    engine = open_engine(f"sqlite:///{db}")
    config = parse_config({"name": name, "labels": {"type": "single", "classes": CLASSES}, "labelers": labelers or [],
                           "policy": {"qualification_tasks": 0, "min_human_votes": 1}})
    with session_scope(engine) as s:
        proj = sync_project(s, config=config)
    return engine, config, proj, db


def seed_votes(db: Path, project_id: int, n_items: int, pops: list[Population], gold_share: float, seed: int = 0,
               decide: bool = False) -> None:
    """Items, voters, votes (and an LLM ledger row per LLM vote) and gold, straight into SQLite."""
    sim = simulate_votes(n_items, len(CLASSES), pops, seed=seed)
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous=OFF")
    with con:
        con.executemany(
            "INSERT INTO items (project_id, external_id, fields, content_hash, status, vote_count, votes_needed, "
            "priority, created_at, updated_at) VALUES (?, ?, ?, ?, 'open', 0, 1, 0.0, ?, ?)",
            ((project_id, f"i{i:07d}", json.dumps({"text": f"item {i}"}), f"h{i}", stamp, stamp) for i in range(n_items)))
        first_item = con.execute("SELECT min(id) FROM items WHERE project_id = ?", (project_id,)).fetchone()[0]
        names, kinds = [], []
        for p in pops:
            for _ in range(p.n_voters):
                names.append(f"{p.kind}{len(names)}")
                kinds.append(p.kind)
        con.executemany("INSERT INTO voters (project_id, name, kind, status, created_at) VALUES (?, ?, ?, 'active', ?)",
                        ((project_id, n, k, stamp) for n, k in zip(names, kinds, strict=True)))
        first_voter = con.execute("SELECT min(id) FROM voters WHERE project_id = ?", (project_id,)).fetchone()[0]
        v = sim.votes
        machine = np.array([k in ("llm", "model") for k in kinds])[v.voter]
        ages = rng.random(len(v)) * 10 * 86400
        times = [(now - timedelta(seconds=float(a))).strftime("%Y-%m-%d %H:%M:%S.%f") for a in ages]
        labels = [json.dumps(c) for c in CLASSES]
        conf = np.where(machine, np.nan_to_num(v.conf, nan=0.8), np.nan)
        latency = np.where(machine, 900.0, rng.gamma(4.0, 2500.0, len(v)))
        con.executemany(
            "INSERT INTO votes (project_id, item_id, voter_id, label, confidence, latency_ms, cost_usd, unsure, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
            ((project_id, first_item + int(i), first_voter + int(w), labels[int(lab)], None if np.isnan(c) else float(c),
              float(lat), 0.0004 if m else 0.0, t)
             for i, w, lab, c, lat, m, t in zip(v.item, v.voter, v.label, conf, latency, machine, times, strict=True)))
        rows = np.flatnonzero(machine)
        con.executemany(
            "INSERT INTO llm_calls (project_id, labeler, model, prompt_version, request_hash, run_id, outcome, "
            "prompt_tokens, completion_tokens, cost_usd, latency_ms, created_at) "
            "VALUES (?, ?, 'openai/fake', 'p1', ?, 'seed', 'ok', 120, 8, 0.0004, 900.0, ?)",
            ((project_id, names[int(v.voter[r])], f"{project_id}-{r}", times[r]) for r in rows))
        gold = np.flatnonzero(rng.random(n_items) < gold_share)
        con.executemany(
            "INSERT INTO gold (project_id, item_id, label, source, weight, split, created_at) VALUES (?, ?, ?, 'imported', 1.0, ?, ?)",
            ((project_id, first_item + int(i), labels[int(sim.truth[i])], "dev" if i % 3 else "test", stamp) for i in gold))
        con.execute("UPDATE items SET vote_count = (SELECT count(*) FROM votes WHERE votes.item_id = items.id) "
                    "WHERE project_id = ?", (project_id,))
        if decide:
            _decide(con, sim, gold, first_item, stamp)
    con.close()


def _decide(con: sqlite3.Connection, sim: Any, gold: np.ndarray, first_item: int, stamp: str) -> None:
    """What ``refit`` stores, computed with the engine directly: ``decisions.refit`` cannot run on
    250,000 SQLite items yet (it binds every item id into one IN list, past SQLite's limit)."""
    from llmlabel.consensus import DawidSkene, Gold

    model = DawidSkene().fit(sim.votes, Gold(item=gold, label=sim.truth[gold]), sim.kinds)
    post = model.predict_proba(sim.votes, None, sim.kinds)
    top, conf = post.argmax(axis=1), post.max(axis=1)
    is_gold = np.zeros(len(top), dtype=bool)
    is_gold[gold] = True
    rows = []
    for i in range(len(top)):
        if is_gold[i]:
            status, label, c, by = "final", CLASSES[int(sim.truth[i])], 1.0, "gold"
        elif conf[i] >= 0.97:
            status, label, c, by = "final", CLASSES[int(top[i])], float(conf[i]), "consensus"
        else:
            status, label, c, by = ("escalated" if i % 7 == 0 else "open"), None, float(conf[i]), None
        posterior = json.dumps(dict(zip(CLASSES, np.round(post[i], 6).tolist(), strict=True)))
        rows.append((status, None if label is None else json.dumps(label), c, by, posterior,
                     stamp if status == "final" else None, first_item + i))
    con.executemany("UPDATE items SET status = ?, final_label = ?, confidence = ?, decided_by = ?, posterior = ?, "
                    "decided_at = ? WHERE id = ?", rows)


# -- phases -----------------------------------------------------------------------------------------


def phase_eval(tmp: Path, n_items: int) -> None:
    from llmlabel.ingest import import_gold, import_items
    from llmlabel.quality.eval_runs import RunStore, run_codes, run_eval
    from llmlabel.quality.evaluation import evaluate
    from llmlabel.testing import FakeLLMServer, obedient

    words = [CLASSES[i % 3] for i in range(n_items)]
    with FakeLLMServer(obedient(labels=CLASSES, confidence=0.8)) as srv:
        labeler = {"name": "gpt", "model": "openai/fake", "concurrency": 64, "cost": {"per_call": 0.0004},
                   "params": {"api_base": srv.base_url, "api_key": "x"}}
        engine, config, proj, _ = project(tmp, "evalbench", [labeler])
        items, gold = tmp / "items.jsonl", tmp / "gold.jsonl"
        items.write_text("".join(json.dumps({"id": f"i{i}", "text": f"item {i} reads as {w}"}) + "\n"
                                 for i, w in enumerate(words)), encoding="utf-8")
        rng = np.random.default_rng(0)
        truth = [w if rng.random() < 0.85 else CLASSES[(CLASSES.index(w) + 1) % 3] for w in words]
        gold.write_text("".join(json.dumps({"id": f"i{i}", "label": t, "split": "dev"}) + "\n" for i, t in enumerate(truth)),
                        encoding="utf-8")
        import_items(engine, project=proj, config=config, path=items)
        import_gold(engine, project=proj, config=config, path=gold)
        started = time.perf_counter()
        run_eval(engine, project=proj, config=config)
        fill = time.perf_counter() - started
        store = RunStore(tmp / "runs", proj.name)

        def timed() -> None:
            [run] = run_eval(engine, project=proj, config=config)
            assert all(i.cached for i in run.items) and srv.request_count == n_items
            m = evaluate(run.predictions(run_codes(config, run)), n_boot=1000)
            assert m.n == n_items and 0.8 < m.accuracy.estimate < 0.9
            store.save(run)

        measure("eval", timed, gold_items=n_items, cache_fill_seconds=round(fill, 1))


def phase_agreement(tmp: Path, n_items: int) -> None:
    from sqlmodel import Session

    from llmlabel.quality.dataset import load_predicted_distributions, load_project
    from llmlabel.quality.intervals import affordable_boot
    from llmlabel.quality.summary import agreement_summary
    from llmlabel.store.db import reader

    engine, config, proj, db = project(tmp, "agreementbench")
    seed_votes(db, proj.id, n_items, [Population(50, per_item=3), Population(2, kind="llm", per_item=1, confident=True)],
               gold_share=0.1)

    def timed() -> None:
        with Session(reader(engine)) as s:
            data = load_project(s, project=proj, config=config)
            serum = load_predicted_distributions(s, project=proj, data=data)
        summary = agreement_summary(data, n_boot=affordable_boot(1000, data.n_items), truth_serum=serum)
        assert data.vote_item.size == 4 * n_items and len(summary.pairs) > 0

    measure("agreement", timed, votes=4 * n_items, n_boot=affordable_boot(1000, n_items))


def phase_report(tmp: Path, n_items: int) -> None:
    from llmlabel.report import write_report

    engine, config, proj, db = project(tmp, "reportbench")
    started = time.perf_counter()
    seed_votes(db, proj.id, n_items, [Population(200, per_item=3), Population(3, kind="llm", per_item=1, confident=True)],
               gold_share=0.02, decide=True)
    setup = time.perf_counter() - started
    out = tmp / "report.html"
    result: dict[str, Any] = {}

    def timed() -> None:
        data = write_report(engine, project=proj, config=config, path=out)
        result["status"] = data.status.by_status

    measure("report", timed, votes=4 * n_items, setup_seconds=round(setup, 1))
    print(json.dumps({"phase": "report", "html_kb": round(out.stat().st_size / 1024), "items": result["status"]}), flush=True)


PHASES = {"eval": (phase_eval, 5_000), "agreement": (phase_agreement, 25_000), "report": (phase_report, 250_000)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", nargs="?", choices=sorted(PHASES))
    ap.add_argument("--items", type=int, help="items (eval: gold items; agreement/report: 4 votes each)")
    args = ap.parse_args()
    if args.phase is None:  # each phase in a fresh process, so peak memory is its own
        for name in PHASES:
            subprocess.run([sys.executable, __file__, name], check=True)
        return
    fn, default = PHASES[args.phase]
    with tempfile.TemporaryDirectory(prefix=f"llmlabel-bench-{args.phase}-") as tmp:
        fn(Path(tmp), args.items or default)


if __name__ == "__main__":
    main()
