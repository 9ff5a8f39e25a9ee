"""A scriptable OpenAI-compatible chat-completions server, for testing LLM labelers.

Why: patching ``litellm.acompletion`` tests the code around the call but not the call — the
request litellm actually builds, its timeouts, its retries, how it surfaces a 429 with
``Retry-After``, a 503, a hang or a reset connection. This server sits on 127.0.0.1 and speaks
the wire format (``POST /v1/chat/completions``, ``GET /v1/models``), so litellm or the ``openai``
SDK run unchanged against it with ``api_base=srv.base_url``. It ships in the package so users
can test their own labeling configs the same way.

    from llmlabel.testing import FakeLLMServer, Script, answer, rate_limited

    script = Script(default=answer({"label": "neutral"}, probs={"neutral": 0.6, "positive": 0.4}))
    script.queue(rate_limited(retry_after=0.2))                 # first call: 429
    script.when("loved it", reply=answer({"label": "positive"}))

    with FakeLLMServer(script) as srv:
        run_my_labeler(api_base=srv.base_url)
        assert srv.status_counts[429] == 1
        assert srv.requests[1].received_at - srv.requests[0].received_at >= 0.2

Pieces: ``replies`` (what to answer), ``responders`` (how to choose: scripts, fail-first,
random faults, an obedient model), ``server`` (the thread-hosted server), ``process`` (the same
in a child process, ``python -m llmlabel.testing``), ``pytest_plugin`` (a ``fake_llm`` fixture).
"""

from llmlabel.testing.process import FakeLLMProcess
from llmlabel.testing.replies import (
    DEFAULT_REFUSAL,
    Reply,
    answer,
    choices,
    error,
    rate_limited,
    refusal,
    reply_from_dict,
    reset,
    text,
    timeout,
    truncated,
)
from llmlabel.testing.responders import (
    FAULT_KINDS,
    Responder,
    Script,
    fail_first,
    faults,
    obedient,
    responder_from_config,
)
from llmlabel.testing.server import FakeLLMServer, serve
from llmlabel.testing.wire import ChatRequest, tokenize

__all__ = [
    "DEFAULT_REFUSAL",
    "FAULT_KINDS",
    "ChatRequest",
    "FakeLLMProcess",
    "FakeLLMServer",
    "Reply",
    "Responder",
    "Script",
    "answer",
    "choices",
    "error",
    "fail_first",
    "faults",
    "obedient",
    "rate_limited",
    "refusal",
    "reply_from_dict",
    "reset",
    "responder_from_config",
    "serve",
    "text",
    "timeout",
    "tokenize",
    "truncated",
]
