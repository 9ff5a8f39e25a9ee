"""The fake server as a child process (``python -m llmlabel.testing``)."""

from __future__ import annotations

import json

import httpx
import pytest

from llmlabel.testing import FakeLLMProcess

SCRIPT = {
    "default": {"json": {"label": "positive"}, "probs": {"positive": 0.9}},
    "queue": [{"error": 429, "retry_after": 0.1}],
    "rules": [{"contains": "reset me", "reply": {"reset": True}}],
}


CLIENT = httpx.Client(timeout=5)


def teardown_module() -> None:
    CLIENT.close()


def post(base_url: str, user: str) -> httpx.Response:
    body = {"model": "fake", "messages": [{"role": "user", "content": user}]}
    return CLIENT.post(base_url + "/chat/completions", json=body)


def test_process_serves_a_json_script_and_stops():
    with FakeLLMProcess(SCRIPT) as proc:
        assert proc.base_url.startswith("http://127.0.0.1:")
        first = post(proc.base_url, "hello")
        assert (first.status_code, first.headers["retry-after"]) == (429, "0.1")
        content = post(proc.base_url, "hello").json()["choices"][0]["message"]["content"]
        assert json.loads(content) == {"label": "positive"}
        with pytest.raises(httpx.TransportError):
            post(proc.base_url, "please reset me")
        proc.stats()  # asking twice: the harness's own requests are not recorded
        stats = proc.stats()
        assert stats["request_count"] == 3
        assert stats["status_counts"] == {"429": 1, "200": 1}
        assert stats["outcome_counts"]["reset"] == 1
        assert [r["attempt"] for r in stats["requests"][:2]] == [1, 2]
    assert proc.process is not None and proc.process.returncode == 0


def test_killed_process_refuses_connections():
    proc = FakeLLMProcess().start()
    assert post(proc.base_url, "hi").status_code == 200
    proc.kill()
    with pytest.raises(httpx.ConnectError):
        post(proc.base_url, "hi")


def test_bad_script_fails_to_start_with_the_reason():
    with pytest.raises(RuntimeError, match="unknown reply key"):
        FakeLLMProcess({"default": {"jsn": {}}}).start()
