"""Helpers for the foundation tests: a registered project, row counts, running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from llmlabel.config import ProjectConfig, load_config
from llmlabel.projects import sync_project
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Project


@dataclass
class Loaded:
    engine: Engine
    config: ProjectConfig
    project: Project


@pytest.fixture
def loaded(engine: Engine, project_file: Path) -> Loaded:
    """The small single-choice project, registered in a fresh database."""
    config = load_config(project_file)
    with session_scope(engine) as session:
        project = sync_project(session, config=config)
    return Loaded(engine, config, project)


def count(engine: Engine, table: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table.__table__)).scalar_one())  # type: ignore[attr-defined]


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[..., Path]:
    """Write text (or bytes, exactly) to a file in the test's folder."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return path

    return write


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMLABEL_DATABASE_URL", "LLMLABEL_PROJECT")}
    return {**env, "NO_COLOR": "1"}


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m llmlabel ARGS`` as a real process, as a user would run it (~1-2 s each)."""
    full_env = _clean_env()
    return subprocess.run(
        [sys.executable, "-m", "llmlabel", *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120, check=False,
    )


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """The same entry point as ``run_cli`` in this process: fast, for the many error cases."""
    from llmlabel.cli import main

    def run(*args: str | Path, cwd: Path) -> CliResult:
        monkeypatch.chdir(cwd)
        for name in ("LLMLABEL_DATABASE_URL", "LLMLABEL_PROJECT"):
            monkeypatch.delenv(name, raising=False)
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        code = info.value.code
        return CliResult(code if isinstance(code, int) else 1, out, err)

    return run
