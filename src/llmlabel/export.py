"""Export the labeled dataset with its provenance, streamed: items and votes are read in id
order side by side and merged, so a million items never sit in memory at once.

Each record: the item's id and fields, the final label, its confidence, status, how it was
decided, the gold label if any, and every vote (voter, kind, label, confidence, prompt
version, cost). The JSONL loads with ``datasets.load_dataset("json", data_files=...)``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from llmlabel.errors import InputError
from llmlabel.store.db import reader
from llmlabel.store.tables import Gold, Item, Project, Vote, Voter

STATUSES = ("open", "final", "escalated")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ["id", "label", "confidence", "status", "decided_by", "decided_level", "gold", "n_votes", "votes", "item"]


@dataclass
class ExportReport:
    path: str
    rows: int


def neutralize(cell: str) -> str:
    """Stop a spreadsheet from running a cell as a formula (CSV injection)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _records(
    engine: Engine, project: Project, statuses: Sequence[str] | None, min_confidence: float | None
) -> Iterator[dict[str, Any]]:
    items, votes, voters, gold = (t.__table__ for t in (Item, Vote, Voter, Gold))  # type: ignore[union-attr]  # SQLModel's stubs do not declare __table__
    item_q = (
        select(items, gold.c.label.label("gold_label"))
        .outerjoin(gold, gold.c.item_id == items.c.id)
        .where(items.c.project_id == project.id)
        .order_by(items.c.id)
    )
    if statuses:
        item_q = item_q.where(items.c.status.in_(list(statuses)))
    if min_confidence is not None:
        item_q = item_q.where(items.c.confidence >= min_confidence)
    vote_q = (
        select(
            votes.c.item_id, voters.c.name, voters.c.kind, votes.c.label, votes.c.confidence,
            votes.c.confidence_method, votes.c.abstain_reason, votes.c.prompt_version,
            votes.c.cost_usd, votes.c.created_at,
        )
        .join(voters, voters.c.id == votes.c.voter_id)
        .where(votes.c.project_id == project.id)
        .order_by(votes.c.item_id, votes.c.id)
    )
    with reader(engine).connect() as item_conn, reader(engine).connect() as vote_conn:
        vote_rows = iter(vote_conn.execution_options(yield_per=5000).execute(vote_q))
        pending = next(vote_rows, None)
        for it in item_conn.execution_options(yield_per=2000).execute(item_q):
            while pending is not None and pending.item_id < it.id:
                pending = next(vote_rows, None)
            item_votes = []
            while pending is not None and pending.item_id == it.id:
                item_votes.append({
                    "voter": pending.name, "kind": pending.kind, "label": pending.label,
                    "confidence": pending.confidence, "confidence_method": pending.confidence_method,
                    "abstain_reason": pending.abstain_reason, "prompt_version": pending.prompt_version,
                    "cost_usd": pending.cost_usd, "at": pending.created_at.isoformat(),
                })
                pending = next(vote_rows, None)
            yield {
                "id": it.external_id, "item": it.fields, "label": it.final_label,
                "confidence": it.confidence, "status": it.status, "decided_by": it.decided_by,
                "decided_level": it.decided_level, "gold": it.gold_label,
                "n_votes": len(item_votes), "votes": item_votes,
            }


def _csv_label(label: Any) -> str:
    if label is None:
        return ""
    if isinstance(label, list):
        return "|".join(label)
    return str(label)


def export_items(
    engine: Engine,
    *,
    project: Project,
    path: Path,
    fmt: str | None = None,
    statuses: Sequence[str] | None = None,
    min_confidence: float | None = None,
) -> ExportReport:
    path = Path(path)
    for s in statuses or ():
        if s not in STATUSES:
            raise InputError(f"status {s!r} is not one of: {', '.join(STATUSES)}")
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise InputError(f"min confidence {min_confidence} must be between 0 and 1")
    fmt = fmt or {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower())
    if fmt not in ("jsonl", "csv", "parquet"):
        raise InputError(f"cannot tell the export format of {path}: use a .jsonl, .csv or .parquet name or --format")
    path.parent.mkdir(parents=True, exist_ok=True)
    records = _records(engine, project, statuses, min_confidence)
    tmp = path.with_name(path.name + ".partial")
    if fmt == "jsonl":
        rows = _write_jsonl(tmp, records)
    elif fmt == "csv":
        rows = _write_csv(tmp, records)
    else:
        rows = _write_parquet(tmp, records)
    tmp.replace(path)  # a reader never sees a half-written export
    return ExportReport(path=str(path), rows=rows)


def _write_jsonl(path: Path, records: Iterator[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write_csv(path: Path, records: Iterator[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for rec in records:
            row = [
                rec["id"], _csv_label(rec["label"]), rec["confidence"], rec["status"], rec["decided_by"],
                rec["decided_level"], _csv_label(rec["gold"]), rec["n_votes"],
                json.dumps(rec["votes"], ensure_ascii=False), json.dumps(rec["item"], ensure_ascii=False),
            ]
            writer.writerow([neutralize(c) if isinstance(c, str) else ("" if c is None else c) for c in row])
            n += 1
    return n


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _write_parquet(path: Path, records: Iterator[dict[str, Any]]) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("writing Parquet needs pyarrow: pip install 'llmlabel[parquet]'") from None
    # Labels, item fields and votes as JSON text: their shape varies by project, a schema cannot.
    schema = pa.schema([
        ("id", pa.string()), ("label", pa.string()), ("confidence", pa.float64()), ("status", pa.string()),
        ("decided_by", pa.string()), ("decided_level", pa.int64()), ("gold", pa.string()),
        ("n_votes", pa.int64()), ("votes", pa.string()), ("item", pa.string()),
    ])
    n = 0
    chunk: list[dict[str, Any]] = []
    with pq.ParquetWriter(path, schema) as writer:
        for rec in records:
            chunk.append({
                **rec, "label": _json_or_null(rec["label"]), "gold": _json_or_null(rec["gold"]),
                "item": json.dumps(rec["item"], ensure_ascii=False),
                "votes": json.dumps(rec["votes"], ensure_ascii=False),
            })
            n += 1
            if len(chunk) >= 5000:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk.clear()
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    return n
