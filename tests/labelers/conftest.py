"""Labeler tests: a real database (SQLite and PostgreSQL) and a real loopback LLM endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from llmlabel.config import ProjectConfig, parse_config
from llmlabel.ingest import import_gold, import_items
from llmlabel.labelers.runner import RunReport
from llmlabel.labelers.service import label_project
from llmlabel.projects import sync_project
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Lease, LLMCall, Project, Vote
from llmlabel.testing.pytest_plugin import fake_llm, fake_llm_server

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
__all__ = ["fake_llm", "fake_llm_server"]

CLASSES = ["positive", "negative", "neutral"]


def labeler(name: str = "gpt", base_url: str = "http://127.0.0.1:9/v1", **kw: Any) -> dict[str, Any]:
    """A labeler entry pointing at an OpenAI-compatible endpoint (the fake server)."""
    params = {"api_base": base_url, "api_key": "test", **kw.pop("params", {})}
    return {"name": name, "model": "openai/fake", "params": params, "max_attempts": 3,
            "timeout_seconds": 5.0, **kw}


def project_dict(*labelers: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"name": "reviews", "labels": {"type": "single", "classes": CLASSES},
            "labelers": list(labelers), **kw}


@dataclass
class Env:
    engine: Engine
    config: ProjectConfig
    project: Project
    dir: Path

    def run(self, **kw: Any) -> RunReport:
        return label_project(self.engine, config=self.config, project_id=self.project.id, **kw)  # type: ignore[arg-type]

    def votes(self) -> list[Vote]:
        with Session(self.engine) as s:
            return list(s.execute(select(Vote).order_by(Vote.item_id, Vote.voter_id)).scalars())  # type: ignore[arg-type]

    def calls(self) -> list[LLMCall]:
        with Session(self.engine) as s:
            return list(s.execute(select(LLMCall).order_by(LLMCall.id)).scalars())  # type: ignore[arg-type]

    def forget_votes(self) -> None:
        """As if the votes were never written (the ledger stays): a crash between the two."""
        with session_scope(self.engine) as s:
            s.execute(delete(Vote))
            s.execute(delete(Lease))

    def count(self, table: type) -> int:
        with Session(self.engine) as s:
            return int(s.execute(select(func.count()).select_from(table)).scalar_one())


Setup = Callable[..., Env]


def write_items(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"i{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


@pytest.fixture
def setup(engine: Engine, tmp_path: Path) -> Setup:
    """``setup(config_dict, texts, gold={index: label})`` → a registered project with items."""

    def make(config: dict[str, Any], texts: list[str], gold: dict[int, str] | None = None) -> Env:
        cfg = parse_config(config)
        with session_scope(engine) as s:
            project = sync_project(s, config=cfg)
        import_items(engine, project=project, config=cfg, path=write_items(tmp_path / "items.jsonl", texts))
        if gold:
            rows = "".join(json.dumps({"id": f"i{i}", "label": lab, "split": "dev"}) + "\n" for i, lab in gold.items())
            (tmp_path / "gold.jsonl").write_text(rows, encoding="utf-8")
            import_gold(engine, project=project, config=cfg, path=tmp_path / "gold.jsonl")
        return Env(engine, cfg, project, tmp_path)

    return make


def cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "llmlabel", *map(str, args)], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout, check=False)
