"""Export: what went in (items, gold, votes, final labels) comes back out, in JSONL and CSV,
filtered by status and confidence, with spreadsheet formulas defused."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from llmlabel.errors import InputError
from llmlabel.export import export_items
from llmlabel.ingest import import_items
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Item, Vote, Voter

from .conftest import Loaded

ITEMS = [
    {"id": "r1", "text": "love it 😍", "gold": "positive"},
    {"id": "r2", "text": "=HYPERLINK(\"http://evil.example\",\"click\")", "gold": ""},
    {"id": "r3", "text": "fine, I guess", "gold": ""},
    {"id": "-r4", "text": "+1 would buy", "gold": ""},
    {"id": "r5", "text": "質量很好", "stars": 5, "tags": ["a", "b"], "gold": ""},
]
# item → (status, final label, confidence, decided_by, decided_level)
DECIDED = {
    "r1": ("final", "positive", 0.99, "consensus", 1),
    "r2": ("final", "negative", 0.75, "consensus", 1),
    "r3": ("escalated", None, None, None, None),
    "-r4": ("final", "@mention", 0.9, "adjudication", 1),
}
# voter → (kind, {item: (label, confidence)})
VOTES = {
    "@alice": ("human", {"r1": ("positive", None), "r2": ("negative", None), "r3": ("neutral", None)}),
    "gpt-small": ("llm", {"r1": ("positive", 0.8), "r2": (None, None), "r3": ("negative", 0.6), "-r4": ("@mention", 0.7)}),
}


@pytest.fixture
def labeled(loaded: Loaded, tmp_path: Path) -> Loaded:
    """Five items imported with one gold label, four decided, seven votes by two voters."""
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ITEMS), encoding="utf-8")
    import_items(loaded.engine, project=loaded.project, config=loaded.config, path=path, gold_field="gold")
    with session_scope(loaded.engine) as session:
        ids = dict(session.execute(Item.__table__.select().with_only_columns(Item.external_id, Item.id)).all())  # type: ignore[attr-defined]
        for ext, (status, label, conf, by, level) in DECIDED.items():
            session.execute(
                update(Item).where(Item.id == ids[ext]).values(
                    status=status, final_label=label, confidence=conf, decided_by=by, decided_level=level
                )
            )
        for name, (kind, votes) in VOTES.items():
            voter = Voter(project_id=loaded.project.id, name=name, kind=kind)
            session.add(voter)
            session.flush()
            for ext, (label, conf) in votes.items():
                session.add(Vote(
                    project_id=loaded.project.id, item_id=ids[ext], voter_id=voter.id, label=label,
                    abstain_reason="unsure" if label is None else None, confidence=conf,
                    confidence_method="logprobs" if conf is not None else None,
                    prompt_version="p1" if kind == "llm" else None, cost_usd=0.001 if kind == "llm" else 0.0,
                ))
    return loaded


def export(lo: Loaded, path: Path, **kw: Any) -> list[dict[str, Any]]:
    report = export_items(lo.engine, project=lo.project, path=path, **kw)
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert report.rows == len(rows)
    assert not path.with_name(path.name + ".partial").exists()
    return rows


def test_jsonl_round_trip(labeled: Loaded, tmp_path: Path) -> None:
    rows = export(labeled, tmp_path / "out.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in ITEMS], "items come out in import order"
    by_id = {r["id"]: r for r in rows}
    for item in ITEMS:
        rec = by_id[item["id"]]
        assert rec["item"] == {k: v for k, v in item.items() if k not in ("id", "gold")}
        status, label, conf, by, level = DECIDED.get(item["id"], ("open", None, None, None, None))
        assert (rec["status"], rec["label"], rec["confidence"], rec["decided_by"], rec["decided_level"]) == (
            status, label, conf, by, level
        )
        expected_votes = [
            (name, kind, votes[item["id"]][0], votes[item["id"]][1])
            for name, (kind, votes) in VOTES.items() if item["id"] in votes
        ]
        assert [(v["voter"], v["kind"], v["label"], v["confidence"]) for v in rec["votes"]] == expected_votes
        assert rec["n_votes"] == len(expected_votes)
    assert by_id["r1"]["gold"] == "positive"
    assert all(by_id[i]["gold"] is None for i in ("r2", "r3", "-r4", "r5"))
    abstention = next(v for v in by_id["r2"]["votes"] if v["label"] is None)
    assert abstention["abstain_reason"] == "unsure"
    llm_vote = by_id["r1"]["votes"][1]
    assert (llm_vote["prompt_version"], llm_vote["cost_usd"], llm_vote["confidence_method"]) == ("p1", 0.001, "logprobs")
    datetime.fromisoformat(llm_vote["at"])


def test_jsonl_lines_share_keys_and_types(labeled: Loaded, tmp_path: Path) -> None:
    """What ``datasets`` / Arrow need: the same top-level keys everywhere, one type per key."""
    rows = export(labeled, tmp_path / "out.jsonl")
    keys = {tuple(sorted(r)) for r in rows}
    assert len(keys) == 1
    assert set(next(iter(keys))) == {
        "id", "item", "label", "confidence", "status", "decided_by", "decided_level", "gold", "n_votes", "votes"
    }
    for key in next(iter(keys)):
        types = {type(r[key]).__name__ for r in rows if r[key] is not None}
        assert len(types) <= 1, f"{key} has several types: {types}"
    vote_keys = {tuple(sorted(v)) for r in rows for v in r["votes"]}
    assert len(vote_keys) == 1


def test_jsonl_loads_with_datasets(labeled: Loaded, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "out.jsonl"
    export(labeled, path)
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert ds.num_rows == len(ITEMS)
    assert ds[0]["label"] == "positive"


def test_csv_round_trip_and_formula_neutralization(labeled: Loaded, tmp_path: Path) -> None:
    rows = export(labeled, tmp_path / "out.csv")
    assert list(rows[0]) == ["id", "label", "confidence", "status", "decided_by", "decided_level", "gold", "n_votes", "votes", "item"]
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"r1", "r2", "r3", "'-r4", "r5"}, "an id starting with '-' is defused"
    assert by_id["'-r4"]["label"] == "'@mention", "a label starting with '@' is defused"
    assert json.loads(by_id["r2"]["item"]) == {"text": ITEMS[1]["text"]}, "a formula inside the item JSON is inert"
    assert (by_id["r1"]["label"], by_id["r1"]["confidence"], by_id["r1"]["gold"], by_id["r1"]["n_votes"]) == (
        "positive", "0.99", "positive", "2"
    )
    assert (by_id["r5"]["label"], by_id["r5"]["confidence"], by_id["r5"]["status"]) == ("", "", "open")
    voters = [v["voter"] for v in json.loads(by_id["r1"]["votes"])]
    assert voters == ["@alice", "gpt-small"]
    assert json.loads(by_id["r5"]["item"]) == {"text": "質量很好", "stars": 5, "tags": ["a", "b"]}
    dangerous = ("=", "+", "-", "@", "\t", "\r")
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(dangerous), f"{column} cell {cell!r} would run as a formula"


def test_multi_label_csv_cell(loaded: Loaded, write_project: Callable[..., Path], tmp_path: Path) -> None:
    from llmlabel.config import load_config
    from llmlabel.projects import sync_project

    config = load_config(write_project({"name": "topics", "labels": {"type": "multi", "classes": ["a", "b", "c"]}}, "m.yaml"))
    with session_scope(loaded.engine) as session:
        project = sync_project(session, config=config)
    items = tmp_path / "m.jsonl"
    items.write_text('{"id": "t1", "text": "x", "gold": "c|a"}\n', encoding="utf-8")
    import_items(loaded.engine, project=project, config=config, path=items, gold_field="gold")
    lo = Loaded(loaded.engine, config, project)
    assert export(lo, tmp_path / "m.csv")[0]["gold"] == "a|c"
    assert export(lo, tmp_path / "m.jsonl")[0]["gold"] == ["a", "c"]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"statuses": ["final"]}, ["r1", "r2", "-r4"]),
        ({"statuses": ["open", "escalated"]}, ["r3", "r5"]),
        ({"min_confidence": 0.9}, ["r1", "-r4"]),
        ({"statuses": ["final"], "min_confidence": 0.95}, ["r1"]),
        ({"min_confidence": 1.0}, []),
    ],
)
def test_filters(labeled: Loaded, tmp_path: Path, kw: dict[str, Any], expected: list[str]) -> None:
    assert [r["id"] for r in export(labeled, tmp_path / "out.jsonl", **kw)] == expected


def test_bad_export_arguments(labeled: Loaded, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="status 'done' is not one of: open, final, escalated"):
        export_items(labeled.engine, project=labeled.project, path=tmp_path / "x.jsonl", statuses=["done"])
    with pytest.raises(InputError, match=r"min confidence 1\.5 must be between 0 and 1"):
        export_items(labeled.engine, project=labeled.project, path=tmp_path / "x.jsonl", min_confidence=1.5)
    with pytest.raises(InputError, match="cannot tell the export format"):
        export_items(labeled.engine, project=labeled.project, path=tmp_path / "x.xlsx")


def test_empty_project_exports_an_empty_file(loaded: Loaded, tmp_path: Path) -> None:
    assert export(loaded, tmp_path / "out.jsonl") == []
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == ""
    assert export(loaded, tmp_path / "out.csv") == []


def test_parquet_export(labeled: Loaded, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "out.parquet"
    report = export_items(labeled.engine, project=labeled.project, path=path)
    rows = pq.read_table(path).to_pylist()
    assert report.rows == len(rows) == len(ITEMS)
    by_id = {r["id"]: r for r in rows}
    assert json.loads(by_id["r1"]["label"]) == "positive"
    assert json.loads(by_id["r1"]["gold"]) == "positive"
    assert by_id["r5"]["label"] is None, "no label is a null, not the text 'null'"
    assert by_id["r5"]["gold"] is None
    assert json.loads(by_id["r5"]["item"]) == {"text": "質量很好", "stars": 5, "tags": ["a", "b"]}
    assert [v["voter"] for v in json.loads(by_id["r1"]["votes"])] == ["@alice", "gpt-small"]
    assert by_id["r1"]["confidence"] == 0.99
