"""A server fits stale consensus models in a child process and swaps the result in."""

from __future__ import annotations

import time

from llmlabel import decisions
from llmlabel.projects import get_project, project_config
from llmlabel.store.db import session_scope

from .conftest import Api, human_vote, reviews


def test_a_stale_fit_is_refitted_in_the_child_process(api: Api) -> None:
    assert decisions.fitter() is not None  # the server's lifespan asked for one
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
