"""pytest fixtures for the fake LLM server.

Enable with ``pytest_plugins = ["llmlabel.testing.pytest_plugin"]`` in a ``conftest.py``::

    def test_labels(fake_llm):
        srv = fake_llm(answer({"label": "positive"}))
        ...  # srv is started; every server made by the factory is stopped after the test
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmlabel.testing.responders import ReplyLike, Responder
from llmlabel.testing.server import FakeLLMServer

FakeLLMFactory = Callable[..., FakeLLMServer]


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMFactory]:
    """A factory ``fake_llm(responder=None, **kwargs) -> FakeLLMServer`` (already started)."""
    servers: list[FakeLLMServer] = []

    def make(responder: Responder | ReplyLike | None = None, **kwargs: Any) -> FakeLLMServer:
        srv = FakeLLMServer(responder, **kwargs).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def fake_llm_server(fake_llm: FakeLLMFactory) -> FakeLLMServer:
    """One started server answering ``"OK"``; set ``.responder`` to script it."""
    return fake_llm()
