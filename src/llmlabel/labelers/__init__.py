"""LLM labelers: items in, votes out (label, confidence, rationale, cost), through one seam.

    completion  the only module that imports litellm; a ``Completer`` is what everything calls
    prompts     Jinja2 templates (top-level ``prompts/``), few-shot from gold, prompt version
    output      the answer's JSON schema from the label schema; reading and checking answers
    confidence  logprobs → probability vector; self-consistency samples; verbalized
    limits      concurrency, requests/min and tokens/min buckets, Retry-After pauses
    retry       the one retry layer (transient errors only, bounded, jittered)
    ledger      every call recorded; the cache of answers; the run's budget; the DB writer
    llm         one labeler: an item → a vote or an abstention with its reason
    runner      many labelers × many items, leased, resumable, split across processes
    local       the embedded default model served by llama-cpp-python on 127.0.0.1
    service     ``label_project``: what ``llmlabel label`` runs
"""

from llmlabel.labelers.completion import Completer, Completion, CompletionRequest, litellm_completer
from llmlabel.labelers.runner import LabelerStats, RunReport, default_run_id
from llmlabel.labelers.service import label_project

__all__ = [
    "Completer",
    "Completion",
    "CompletionRequest",
    "LabelerStats",
    "RunReport",
    "default_run_id",
    "label_project",
    "litellm_completer",
]
