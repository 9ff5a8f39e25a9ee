"""A server fits stale consensus models in a child process and swaps the result in."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from llmlabel import decisions
from llmlabel.api import ApiSettings, create_app
from llmlabel.projects import get_project, project_config
from llmlabel.store.db import session_scope

from .conftest import Api, bearer, human_vote, reviews


@pytest.fixture
def api(engine: Engine, admin_token: str) -> Iterator[Api]:
    """The app as `llmlabel serve` runs it: fits in a child process."""
    with TestClient(create_app(engine, ApiSettings(fit_in_child_process=True))) as client:
        yield Api(client, engine, bearer(admin_token))
    assert decisions.fitter() is None  # stopped with the server


def test_a_stale_fit_is_refitted_in_the_child_process(api: Api) -> None:
    child = decisions.fitter()
    assert child is not None  # the server's lifespan asked for one
    api.project("p", min_human_votes=1)
    api.items("p", reviews(4))
    human_vote(api, "p", "r0000", "positive", "ann")
    with session_scope(api.engine) as s:
        project = get_project(s, name="p")
        config = project_config(s, project=project)
        first = decisions._fit_for(s, project, config)
        key = decisions._key(s, project)
    assert first.n_votes == 1
    human_vote(api, "p", "r0001", "negative", "bob")
    first.fitted_at = 0.0  # stale: the next use asks for a refit and keeps serving this one
    with session_scope(api.engine) as s:
        assert decisions._fit_for(s, project, config) is first
    deadline = time.monotonic() + 60  # the child imports llmlabel on its first job
    while decisions._fits[key] is first:
        assert time.monotonic() < deadline, "the child process never sent a fit back"
        time.sleep(0.05)
    assert decisions._fits[key].n_votes == 2 and key not in decisions._refitting


def test_the_fitting_process_leaves_with_its_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A server killed outright does not shut its pool down: the child notices and exits."""
    import subprocess
    import sys

    script = (
        "import os, sys, time\n"
        "from llmlabel import decisions\n"
        "decisions.fit_in_child_process()\n"
        "pool = decisions.fitter()\n"
        "print(pool.submit(os.getpid).result(), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    child = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the fitting process outlived its server"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
