"""``llmlabel eval`` end to end: a real loopback LLM endpoint, a real database, the real CLI app.

The fake model is "obedient": it answers the label word its item mentions last, so which gold
items it gets wrong is known in advance (the items whose gold disagrees with their word).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from llmlabel.cli import app
from llmlabel.config import parse_config
from llmlabel.ingest import import_gold, import_items
from llmlabel.projects import sync_project
from llmlabel.quality.eval_runs import (
    RunStore,
    aligned,
    evaluate_votes,
    run_codes,
    run_eval,
    variant_config,
)
from llmlabel.quality.evaluation import compare, evaluate
from llmlabel.store.db import session_scope
from llmlabel.store.tables import LLMCall, Project, Vote
from llmlabel.testing import obedient
from llmlabel.testing.pytest_plugin import fake_llm

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
__all__ = ["fake_llm"]

CLASSES = ["positive", "negative", "neutral"]
WORDS = ["positive", "negative", "neutral", "positive", "negative", "neutral", "positive", "negative",
         "neutral", "positive", "negative", "neutral"]
GOLD = list(WORDS)
GOLD[6], GOLD[7], GOLD[10] = "negative", "neutral", "positive"  # the model will be wrong on these three
SPLIT = ["dev"] * 8 + ["test"] * 4


def labeler(base_url: str, per_call: float = 0.001, **kw: Any) -> dict[str, Any]:
    return {"name": "gpt", "model": "openai/fake", "params": {"api_base": base_url, "api_key": "test"},
            "cost": {"per_call": per_call}, "max_attempts": 2, "timeout_seconds": 5.0, "concurrency": 4, **kw}


def setup(engine: Engine, tmp_path: Path, base_url: str) -> tuple[Path, Any, Project]:
    cfg_dict = {"name": "evals", "labels": {"type": "single", "classes": CLASSES}, "labelers": [labeler(base_url)]}
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump(cfg_dict), encoding="utf-8")
    config = parse_config(cfg_dict)
    with session_scope(engine) as s:
        project = sync_project(s, config=config)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"r{i}", "text": f"item {i}: I think this is {w}"}) + "\n"
                             for i, w in enumerate(WORDS)), encoding="utf-8")
    import_items(engine, project=project, config=config, path=items)
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": f"r{i}", "label": g, "split": s}) + "\n"
                            for i, (g, s) in enumerate(zip(GOLD, SPLIT, strict=True))), encoding="utf-8")
    import_gold(engine, project=project, config=config, path=gold)
    return path, config, project


def test_eval_scores_dev_gold_through_the_ledger_and_records_no_votes(engine: Engine, tmp_path: Path, fake_llm) -> None:
    srv = fake_llm(obedient(labels=CLASSES, confidence=0.8))
    _, config, project = setup(engine, tmp_path, srv.base_url)
    [run] = run_eval(engine, project=project, config=config, split="dev")
    assert srv.request_count == 8 and len(run.items) == 8 and run.split == "dev"
    assert run.spent_usd == pytest.approx(0.008)
    m = evaluate(run.predictions(run_codes(config, run)), n_boot=100)
    assert m.accuracy.estimate == pytest.approx(6 / 8)
    assert m.cost_per_item.estimate == pytest.approx(0.001)
    assert m.ece.estimate == pytest.approx(abs(0.75 - 0.8))  # every answer at confidence 0.8, 6 of 8 right
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(Vote)).scalar_one() == 0
        assert {r for r in s.execute(select(LLMCall.run_id)).scalars()} == {f"eval-{run.name}"}
    again = run_eval(engine, project=project, config=config, split="dev")[0]
    assert srv.request_count == 8  # every answer came from the ledger
    assert again.spent_usd == 0 and all(i.cached for i in again.items)
    assert [i.cost_usd for i in again.items] == pytest.approx([0.001] * 8)  # what each answer cost when paid
    assert again.name == run.name  # same labeler, prompt and model: the same run
    [test_run] = run_eval(engine, project=project, config=config, split="test")
    assert srv.request_count == 12 and {i.item_id for i in test_run.items} == {"r8", "r9", "r10", "r11"}


def test_a_variant_is_compared_item_by_item(engine: Engine, tmp_path: Path, fake_llm) -> None:
    a_srv = fake_llm(obedient(labels=CLASSES, confidence=0.8))

    def rule(text: str) -> str | None:  # fixes item 6, breaks item 0, otherwise the word
        if "item 6:" in text:
            return "negative"
        if "item 0:" in text:
            return "neutral"
        m = re.findall(r"positive|negative|neutral", text)
        return m[-1] if m else None

    b_srv = fake_llm(obedient(rule, labels=CLASSES, confidence=0.9))
    _path, config, project = setup(engine, tmp_path, a_srv.base_url)
    variant_file = tmp_path / "variant.yaml"
    variant_file.write_text(yaml.safe_dump({"labelers": [labeler(b_srv.base_url, per_call=0.002)]}), encoding="utf-8")
    variant = variant_config(config, variant_file)
    [a] = run_eval(engine, project=project, config=config)
    [b] = run_eval(engine, project=project, config=variant)
    assert a.name != b.name and a.prompt_version == b.prompt_version  # same prompt, other endpoint
    ia, ib = aligned(a, b)
    codes = run_codes(config, a, b)
    cmp = compare(a.predictions(codes, ia), b.predictions(codes, ib), n_boot=200)
    assert [ia[r].item_id for r in cmp.fixed] == ["r6"] and [ia[r].item_id for r in cmp.broken] == ["r0"]
    d = {x.metric: x for x in cmp.deltas}
    assert d["accuracy"].delta.estimate == pytest.approx(0.0)
    assert d["cost_per_item"].delta.estimate == pytest.approx(0.001) and d["cost_per_item"].better == -1
    store = RunStore(tmp_path / "runs", project.name)
    store.save(a)
    store.save(b)
    assert store.load(a.name[:8] + a.name[8:]).items == a.items


def test_variant_may_not_change_the_labels(engine: Engine, tmp_path: Path) -> None:
    from llmlabel.errors import InputError

    _, config, _ = setup(engine, tmp_path, "http://127.0.0.1:9/v1")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"labels": {"type": "single", "classes": ["yes", "no"]}}), encoding="utf-8")
    with pytest.raises(InputError, match="changes the label schema"):
        variant_config(config, bad)


def test_stored_votes_are_scored_like_a_run(engine: Engine, tmp_path: Path) -> None:
    from llmlabel.projects import get_or_create_voter
    from llmlabel.votes import VoteInput, record_vote

    _, config, project = setup(engine, tmp_path, "http://127.0.0.1:9/v1")
    with session_scope(engine) as s:
        voter = get_or_create_voter(s, project_id=project.id, name="ann", kind="human")  # type: ignore[arg-type]
        s.flush()
        ids = dict(s.execute(select(Project.id, Project.name)).all())
        assert ids
        from llmlabel.store.tables import Item

        for ext, item_id in s.execute(select(Item.external_id, Item.id)).all():
            i = int(ext[1:])
            record_vote(s, project_id=project.id, item_id=item_id, voter_id=voter.id,  # type: ignore[arg-type]
                        vote=VoteInput(label=None if i == 1 else GOLD[i], latency_ms=1000.0 * (i + 1)))
    with session_scope(engine) as s:
        run = evaluate_votes(s, project=project, config=config, voter="ann", split="dev")
    m = evaluate(run.predictions(run_codes(config, run)), n_boot=50)
    assert run.source == "votes" and m.n == 8 and m.answered == 7
    assert m.accuracy.estimate == pytest.approx(7 / 8) and m.answered_accuracy.estimate == pytest.approx(1.0)
    assert m.latency_p50.estimate == 4000.0  # latencies 1,3,4,…,8 s: the 4th of 7
    with session_scope(engine) as s, pytest.raises(Exception, match="no voter 'bob'"):
        evaluate_votes(s, project=project, config=config, voter="bob")


def test_the_cli_evaluates_lists_and_compares(engine: Engine, db_url: str, tmp_path: Path, fake_llm) -> None:
    srv = fake_llm(obedient(labels=CLASSES, confidence=0.8))
    path, _, _ = setup(engine, tmp_path, srv.base_url)
    runner = CliRunner()
    base = ["-p", str(path), "--db", db_url]
    r = runner.invoke(app, ["eval", *base, "--boot", "100"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "accuracy (abstentions count wrong)" in r.output and "0.750" in r.output and "macro-F1" in r.output
    name = re.search(r"stored as (\S+);", r.output).group(1)  # type: ignore[union-attr]
    variant = tmp_path / "variant.yaml"
    variant.write_text(yaml.safe_dump({"labelers": [labeler(srv.base_url, per_call=0.003, params={
        "api_base": srv.base_url, "api_key": "test", "temperature": 0.0, "max_tokens": 50})]}), encoding="utf-8")
    r = runner.invoke(app, ["eval", *base, "--config", str(variant), "--name", "b", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["b"]["accuracy"]["estimate"] == pytest.approx(0.75)
    r = runner.invoke(app, ["eval", *base, "--list"], env={"COLUMNS": "200"})
    assert name in r.output and " b " in r.output
    r = runner.invoke(app, ["eval", *base, "--compare", name, "b", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["fixed"] == [] and out["broken"] == [] and out["deltas"]["cost_per_item"]["estimate"] == pytest.approx(0.002)
    assert (tmp_path / ".llmlabel" / "evals" / "evals" / "b.json").is_file()
