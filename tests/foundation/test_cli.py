"""The ``llmlabel`` command: exit 0 when it works, 1 with one line for a user error (no
traceback), 2 for a usage error. Real processes where the process boundary matters (exit
status, stderr as a user sees it); the entry point in-process for the many error cases."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import CliResult, run_cli


def one_line_error(result: Any) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_whole_session(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    (tmp_path / "items.csv").write_text("id,text,gold\nr1,great,positive\nr2,awful,\nr3,ok,\n", encoding="utf-8")
    (tmp_path / "gold.jsonl").write_text('{"id": "r2", "label": "negative"}\n', encoding="utf-8")
    steps = [
        ("init",),
        ("import", "items", "items.csv", "--gold-field", "gold"),
        ("import", "gold", "gold.jsonl"),
        ("export", "out/data.jsonl"),
    ]
    outputs = []
    for step in steps:
        result = run_cli(*step, cwd=tmp_path)
        assert result.returncode == 0, (step, result.stdout, result.stderr)
        assert result.stderr == ""
        outputs.append(result.stdout)
    assert "3 rows read, 3 items imported, 0 already present, 1 gold labels" in outputs[1]
    assert "1 rows read, 1 gold labels imported" in outputs[2]
    assert (tmp_path / "llmlabel.db").exists(), "the database sits beside the project file by default"
    records = [json.loads(line) for line in (tmp_path / "out" / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["gold"]) for r in records] == [("r1", "positive"), ("r2", "negative"), ("r3", None)]
    # a gold item is decided by its gold label at import: never served as an ordinary task
    assert [(r["status"], r["label"], r["decided_by"]) for r in records] == [
        ("final", "positive", "gold"), ("final", "negative", "gold"), ("open", None, None)]
    assert all("gold" not in r["item"] for r in records)
    status = cli("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "3 items, 2 gold" in status.stdout


@pytest.fixture
def project_dir(tmp_path: Path, project_file: Path) -> Path:
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n', encoding="utf-8")
    return tmp_path


def test_user_error_in_a_real_process(project_dir: Path) -> None:
    result = run_cli("import", "items", "bad.jsonl", "-p", "project.yaml", cwd=project_dir)
    assert "bad.jsonl:2: not valid JSON" in one_line_error(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("import", "items", "bad.jsonl", "-p", "project.yaml"), "1 bad row(s), nothing imported: bad.jsonl:2: not valid JSON"),
        (("import", "items", "missing.jsonl", "-p", "project.yaml"), "missing.jsonl does not exist"),
        (("import", "items", "bad.jsonl", "-p", "nope.yaml"), "nope.yaml does not exist; create one with `llmlabel init`"),
        (("import", "items", "bad.jsonl", "-p", "project.yaml", "--on-error", "maybe"), "--on-error 'maybe' must be 'fail' or 'skip'"),
        (("import", "gold", "bad.jsonl", "-p", "project.yaml", "--format", "xml"), "unknown format 'xml'"),
        (("status", "-p", "project.yaml", "--db", "mysql://x/y"), "unsupported database 'mysql'"),
        (("status", "-p", "project.yaml", "--db", "postgresql://postgres@127.0.0.1:1/none"), "cannot open the database"),
        (("export", "out.xlsx", "-p", "project.yaml"), "cannot tell the export format"),
        (("export", "out.jsonl", "-p", "project.yaml", "--status", "done"), "status 'done' is not one of"),
        (("init", "--template", "poetry"), "unknown template 'poetry'"),
    ],
    ids=["bad-row", "missing-file", "missing-project", "bad-on-error", "bad-format", "bad-db", "unreachable-db",
         "bad-export-format", "bad-status", "bad-template"],
)
def test_user_errors_exit_1_with_one_line(
    project_dir: Path, cli: Callable[..., CliResult], args: tuple[str, ...], message: str
) -> None:
    assert message in one_line_error(cli(*args, cwd=project_dir))


def test_skip_mode_reports_rejects_and_exits_0(project_dir: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("import", "items", "bad.jsonl", "-p", "project.yaml", "--on-error", "skip", cwd=project_dir)
    assert result.returncode == 0, result.stderr
    assert "1 items imported" in result.stdout
    assert "1 rejected" in result.stdout
    assert "bad.jsonl.rejects.jsonl" in result.stdout


def test_usage_error_in_a_real_process(tmp_path: Path) -> None:
    result = run_cli("frobnicate", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "No such command 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("import", "items"), "missing argument"),
        (("import",), ""),
        (("export", "x.jsonl", "--min-confidence", "high"), "invalid value for '--min-confidence'"),
        (("import", "items", "x.jsonl", "--no-such-option"), "no such option: --no-such-option"),
    ],
    ids=["missing-argument", "missing-subcommand", "bad-option-type", "unknown-option"],
)
def test_usage_errors_exit_2(tmp_path: Path, cli: Callable[..., CliResult], args: tuple[str, ...], message: str) -> None:
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in (result.stderr + result.stdout).lower()
    assert "Traceback" not in result.stderr
