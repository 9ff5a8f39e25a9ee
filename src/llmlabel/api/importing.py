"""JSON rows posted to the API go through the same streaming import as files do."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from llmlabel.config import ProjectConfig
from llmlabel.ingest import ImportReport, OnError, import_items
from llmlabel.store.tables import Project


def import_json_rows(
    engine: Engine, *, project: Project, config: ProjectConfig, rows: list[dict[str, Any]],
    on_error: OnError = "fail", gold_field: str | None = None,
) -> ImportReport:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "request.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return import_items(engine, project=project, config=config, path=path, on_error=on_error,
                            gold_field=gold_field, reject_path=Path(tmp) / "rejects.jsonl")
