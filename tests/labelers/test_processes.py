"""``llmlabel label`` as real processes: a CLI run, two processes sharing the work, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, select
from sqlmodel import Session
from tests.labelers.conftest import CLASSES, cli, labeler, project_dict, write_items

from llmlabel.store.tables import Vote
from llmlabel.testing import FakeLLMProcess, answer

pytestmark = pytest.mark.slow


def write_project(tmp: Path, base_url: str, n_items: int, *labelers: dict[str, Any], **policy: Any) -> Path:
    config = project_dict(*(labelers or (labeler("gpt", base_url, concurrency=4),)), policy=policy)
    path = tmp / "project.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    write_items(tmp / "items.jsonl", [f"item {i} is {CLASSES[i % 3]}" for i in range(n_items)])
    done = cli("import", "items", tmp / "items.jsonl", "-p", path, cwd=tmp)
    assert done.returncode == 0, done.stderr
    return path


def votes_per_item_voter(db: Path) -> Counter[tuple[int, int]]:
    engine = create_engine(f"sqlite:///{db}")
    with Session(engine) as s:
        rows = s.execute(select(Vote.item_id, Vote.voter_id)).all()
    engine.dispose()
    return Counter((i, v) for i, v in rows)


def test_cli_label_prints_a_summary(tmp_path: Path, fake_llm) -> None:
    srv = fake_llm(answer({"label": "neutral", "rationale": "r"}, probs={"neutral": 0.7, "positive": 0.3}))
    project = write_project(tmp_path, srv.base_url, 6)
    done = cli("label", "-p", project, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "6 votes, 6 calls, 0 cache hits" in done.stdout
    again = cli("label", "-p", project, "--quiet", cwd=tmp_path)
    assert again.returncode == 0 and "0 votes, 0 calls" in again.stdout
    assert srv.request_count == 6
    bad = cli("label", "-p", project, "--labeler", "nope", cwd=tmp_path)
    assert bad.returncode == 1 and "no labeler named 'nope'" in bad.stderr


def test_cli_budget_and_limit(tmp_path: Path, fake_llm) -> None:
    srv = fake_llm(answer({"label": "neutral"}))
    project = write_project(tmp_path, srv.base_url, 10, labeler("gpt", srv.base_url, concurrency=1, cost={"per_call": 0.01}))
    done = cli("label", "-p", project, "--quiet", "--limit", "2", cwd=tmp_path)
    assert done.returncode == 0 and srv.request_count == 2
    capped = cli("label", "-p", project, "--quiet", "--budget", "0.04", cwd=tmp_path)
    assert capped.returncode == 1 and "budget" in capped.stderr
    assert srv.request_count == 4  # 0.02 spent by the first invocation of the same run


def test_two_processes_split_the_items(tmp_path: Path) -> None:
    n = 40
    # answers come after a pause, so both processes are labeling at the same time
    with FakeLLMProcess({"default": {"json": {"label": "positive"}, "latency": 0.05}}) as srv:
        project = write_project(tmp_path, srv.base_url, n, labeler("gpt", srv.base_url, concurrency=2),
                                labeler("small", srv.base_url, concurrency=2))
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        procs = [subprocess.Popen([sys.executable, "-m", "llmlabel", "label", "-p", str(project), "--quiet"],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=180) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        stats = srv.stats()
    counts = votes_per_item_voter(tmp_path / "llmlabel.db")
    assert len(counts) == 2 * n and set(counts.values()) == {1}
    assert stats["request_count"] == 2 * n  # no item asked twice by one labeler
    per_process = [int(out.split(" votes,")[0].split()[-1]) for out, _ in outs]
    assert sum(per_process) == 2 * n


def test_kill_minus_9_then_rerun_loses_nothing_and_repays_only_in_flight(tmp_path: Path) -> None:
    n, concurrency = 30, 3
    with FakeLLMProcess({"default": {"json": {"label": "positive"}, "latency": 0.25}}) as srv:
        project = write_project(tmp_path, srv.base_url, n, labeler("gpt", srv.base_url, concurrency=concurrency),
                                labeler("small", srv.base_url, concurrency=concurrency), lease_seconds=5)
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "llmlabel", "label", "-p", str(project), "--quiet"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while srv.stats()["request_count"] < 20:
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = votes_per_item_voter(tmp_path / "llmlabel.db")
        assert sum(before.values()) < 2 * n, "killed too late to test anything"
        time.sleep(5.5)  # the dead process's leases expire (policy.lease_seconds = 5)
        done = cli("label", "-p", project, "--quiet", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        total = srv.stats()["request_count"]
    counts = votes_per_item_voter(tmp_path / "llmlabel.db")
    assert len(counts) == 2 * n and set(counts.values()) == {1}
    assert total - 2 * n <= 2 * concurrency, f"{total - 2 * n} calls paid twice; at most the in-flight ones may be"
