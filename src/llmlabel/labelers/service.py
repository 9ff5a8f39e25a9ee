"""``label_project``: what ``llmlabel label`` does, callable from the CLI, the API and tests.

It binds each configured labeler to an endpoint (a hosted model through litellm, a local GGUF
through a llama.cpp server started here, or whatever completer a caller passes) and runs them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Coroutine, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from llmlabel.config import LabelerConfig, ProjectConfig
from llmlabel.errors import ConfigError
from llmlabel.labelers.completion import Completer, litellm_completer
from llmlabel.labelers.llm import Endpoint
from llmlabel.labelers.local import PREFIX, LocalServer, find_gguf, is_local
from llmlabel.labelers.runner import LabelerSpec, Progress, Run, RunReport

T = TypeVar("T")
LOCAL_DEFAULTS = {"max_tokens": 256, "top_logprobs": 20}


def select_labelers(config: ProjectConfig, names: Sequence[str] | None) -> list[LabelerConfig]:
    chosen = list(config.labelers)
    if names:
        known = {lab.name for lab in chosen}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"no labeler named {', '.join(map(repr, unknown))}; the project has: {', '.join(sorted(known)) or '(none)'}")
        chosen = [lab for lab in chosen if lab.name in names]
    if not chosen:
        raise ConfigError("the project has no labelers; add one under 'labelers:' (e.g. model: local/smollm2)")
    return chosen


def bind(labeler: LabelerConfig, stack: ExitStack, completer: Completer | None = None) -> LabelerSpec:
    """Where this labeler's calls go; starts a local model server when the model is local/…"""
    params = dict(labeler.params)
    api_base = params.pop("api_base", None)
    api_key = params.pop("api_key", None)
    if labeler.api_key_env:
        api_key = os.environ.get(labeler.api_key_env)
        if not api_key:
            raise ConfigError(f"labeler {labeler.name!r}: environment variable {labeler.api_key_env} is not set")
    json_mode: bool | None = None
    identity = None
    model = labeler.model
    if is_local(model):
        name = model.removeprefix(PREFIX)
        alias = Path(name).stem if name.endswith(".gguf") else name
        gguf = find_gguf(name)
        server = stack.enter_context(LocalServer(gguf, alias, logprobs=labeler.confidence == "logprobs"))
        model, api_base, api_key, json_mode = f"openai/{alias}", server.base_url, "local", False
        identity = f"{PREFIX}{gguf.name}:{gguf.stat().st_size}"  # the file, not this run's port
        params = {**LOCAL_DEFAULTS, **params}
    labeler = labeler.model_copy(update={"params": params})
    return LabelerSpec(
        config=labeler,
        endpoint=Endpoint(model=model, api_base=api_base, api_key=api_key, json_schema_mode=json_mode,
                          server_identity=identity),
        completer=completer or litellm_completer(labeler.cost),
    )


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even where an event loop is
    already running in this thread (a notebook, a browser test harness): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def label_project(
    engine: Engine, *, config: ProjectConfig, project_id: int, labelers: Sequence[str] | None = None,
    limit: int | None = None, budget_usd: float | None = None, run_id: str | None = None,
    project_dir: Path | None = None, progress: Progress | None = None, completer: Completer | None = None,
) -> RunReport:
    """Run the project's LLM labelers over its pending items; returns what happened."""
    with ExitStack() as stack:
        specs = [bind(lab, stack, completer) for lab in select_labelers(config, labelers)]
        run = Run(engine=engine, config=config, project_id=project_id, specs=specs, run_id=run_id,
                  budget_usd=budget_usd, limit=limit, project_dir=project_dir, progress=progress)
        return run_sync(run.run())


def pending_counts(engine: Engine, *, project_id: int, names: Sequence[str]) -> dict[str, int]:
    """Open items each labeler has not voted on yet (for a progress bar's total)."""
    from sqlalchemy import and_, exists, func, select
    from sqlmodel import Session, col

    from llmlabel.store.db import reader
    from llmlabel.store.tables import Item, Vote, Voter

    out = {}
    with Session(reader(engine)) as session:
        for name in names:
            voted = exists().where(col(Vote.item_id) == Item.id, col(Vote.voter_id) == Voter.id)
            q = (select(func.count()).select_from(Item)
                 .outerjoin(Voter, and_(col(Voter.project_id) == project_id, col(Voter.name) == name))
                 .where(col(Item.project_id) == project_id, col(Item.status) == "open", ~voted))
            out[name] = int(session.execute(q).scalar_one())
    return out
