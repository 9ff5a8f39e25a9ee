"""The run's answer journal: an answer is durable (and its slot free) before the ledger has it;
a clean run leaves no journal; the next run moves a dead process's answers into the ledger."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session
from tests.labelers.conftest import Env, Setup, labeler, project_dict

from llmlabel.labelers.journal import Journal, journal_dir, recover
from llmlabel.labelers.ledger import CallRow, Writer
from llmlabel.store.tables import LLMCall, utcnow


def _row(env: Env, h: str) -> CallRow:
    assert env.project.id is not None
    return CallRow(project_id=env.project.id, labeler="gpt", model="openai/fake", prompt_version="v",
                   request_hash=h, run_id="run", outcome="ok", response={"choices": [{"content": h}]}, cost_usd=0.5)


def _hashes(env: Env) -> list[str]:
    with Session(env.engine) as s:
        return sorted(s.execute(select(LLMCall.request_hash)).scalars())


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_an_answer_frees_its_slot_at_once_and_a_clean_close_leaves_no_journal(setup: Setup, tmp_path: Path) -> None:
    env = setup(project_dict(labeler()), ["a"])
    directory = tmp_path / "answers"

    async def main() -> list[Any]:
        journal = Journal(directory)
        writer = Writer(env.engine, journal=journal)
        freed: list[Any] = []
        writer.record_call(_row(env, "h1"), done=lambda: freed.append(journal.path.read_text().count("\n")))
        await asyncio.to_thread(writer.close)
        return freed

    assert asyncio.run(main()) == [1]  # done ran when the line was written, before any commit
    assert _hashes(env) == ["h1"]
    assert not directory.exists()


def test_the_next_run_moves_a_dead_process_answers_into_the_ledger_once(setup: Setup) -> None:
    env = setup(project_dict(labeler()), ["a"])
    directory = journal_dir(env.engine)
    journal = Journal(directory)
    now = utcnow()
    for h in ("paid", "lost1", "lost2"):
        journal.append({**_row(env, h).__dict__, "response": '{"choices": []}', "created_at": now})
    os.write(os.open(journal.path, os.O_WRONLY | os.O_APPEND), b'{"request_hash": "cut sh')  # killed mid-line
    dead = journal.path.with_name(f"{_dead_pid()}-1.jsonl")
    journal.path.rename(dead)
    mine = Journal(directory)  # a live process's journal (this one's) is left alone
    mine.append({**_row(env, "mine").__dict__, "response": '{"choices": []}', "created_at": now})
    writer = Writer(env.engine)  # "paid" reached the ledger before the kill

    async def commit_paid() -> None:
        writer.record_call(_row(env, "paid"))
        await asyncio.to_thread(writer.close)

    asyncio.run(commit_paid())

    assert recover(env.engine, directory) == 2
    assert _hashes(env) == ["lost1", "lost2", "paid"]
    assert not dead.exists() and mine.path.exists()
    with Session(env.engine) as s:
        lost = s.execute(select(LLMCall.cost_usd, LLMCall.created_at).where(LLMCall.request_hash == "lost1")).one()
        assert lost[0] == 0.5 and abs((lost[1].replace(tzinfo=now.tzinfo) - now).total_seconds()) < 1
    assert recover(env.engine, directory) == 0  # nothing twice
    with Session(env.engine) as s:
        assert s.execute(select(func.count()).select_from(LLMCall)).scalar_one() == 3
    mine.close(keep=False)


def test_an_answer_the_journal_cannot_take_frees_its_slot_once_committed(setup: Setup, tmp_path: Path) -> None:
    env = setup(project_dict(labeler()), ["a"])

    async def main() -> list[int]:
        journal = Journal(tmp_path / "answers")
        os.close(journal._fd)  # writes now fail, as on a full disk
        journal._fd = os.open(os.devnull, os.O_RDONLY)
        writer = Writer(env.engine, journal=journal)
        freed: list[int] = []
        committed = asyncio.Event()

        def done() -> None:
            freed.append(len(_hashes(env)))
            committed.set()

        writer.record_call(_row(env, "h1"), done=done)
        await asyncio.wait_for(committed.wait(), 10)
        await asyncio.to_thread(writer.close)
        return freed

    assert asyncio.run(main()) == [1]  # done waited for the row to be in the ledger


def test_a_long_run_keeps_only_the_journal_files_not_yet_committed(setup: Setup, tmp_path: Path) -> None:
    env = setup(project_dict(labeler()), ["a"])
    directory = tmp_path / "answers"

    async def main() -> tuple[int, int]:
        journal = Journal(directory, rotate_bytes=1)  # a new file after every row
        writer = Writer(env.engine, journal=journal)
        for h in ("h1", "h2", "h3"):
            writer.record_call(_row(env, h), done=lambda: None)
        written = len(list(directory.iterdir()))  # three full files and the open one, or fewer if committed already
        await writer.flush()
        left = len(list(directory.iterdir()))
        await asyncio.to_thread(writer.close)
        return written, left

    written, left = asyncio.run(main())
    assert 1 <= written <= 4 and left == 1  # the full files went once their rows were committed
    assert _hashes(env) == ["h1", "h2", "h3"]
    assert not directory.exists()
