"""The quality commands as a user types them (in process; the shells only print what the service
functions return, so SQLite is enough here — the functions run on both databases elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmlabel.cli import app
from llmlabel.store.db import open_engine

from .conftest import Seeded, seed_project

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def site(tmp_path: Path) -> tuple[Seeded, list[str]]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    seeded = seed_project(open_engine(url), tmp_path)
    return seeded, ["-p", str(seeded.path), "--db", url]


def run(*args: str) -> str:
    r = CliRunner().invoke(app, list(args), env=ENV)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


def test_report_agreement_and_alerts(site: tuple[Seeded, list[str]], tmp_path: Path) -> None:
    _, base = site
    out = run("report", *base, "-o", str(tmp_path / "r.html"), "--boot", "100")
    assert "wrote" in out and (tmp_path / "r.html").stat().st_size > 20_000
    out = run("agreement", *base, "--boot", "100")
    assert "Krippendorff α (nominal), humans" in out and "llm0" in out
    assert "new alert(s)" in run("alerts", *base, "--check")
    assert "0 new alert(s)" in run("alerts", *base, "--check")  # one alert per signal and window


def test_audit_and_gold_mining(site: tuple[Seeded, list[str]]) -> None:
    _, base = site
    assert "sent 3 of" in run("audit", *base, "--sample", "3", "--seed", "1")
    out = run("audit", *base, "--report")
    assert "0 audited items resolved, 3 waiting for a reviewer" in out
    out = run("gold", "mine", *base, "--min-posterior", "0.95", "--min-trusted", "1")
    assert "gold candidates" in out and "dry run" in out
    out = run("gold", "mine", *base, "--min-posterior", "0.95", "--min-trusted", "1", "--limit", "4", "--apply")
    assert "added 4 mined gold items (dev)" in out
    r = CliRunner().invoke(app, ["audit", *base], env=ENV)
    assert r.exit_code != 0 and "pass --sample N" in str(r.exception)
