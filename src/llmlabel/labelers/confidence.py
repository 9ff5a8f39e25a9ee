"""How sure a labeler is, obtained three ways, recorded with the way (``confidence_method``).

- ``logprobs``: the token probabilities at the label's position, renormalized over the tokens
  that can start an allowed label. Renormalizing matters for llama.cpp, whose top_logprobs are
  taken before the grammar masks the vocabulary (so part of the mass sits on tokens the grammar
  would never have let through). Labels that share their first token are told apart by
  following the chosen token to the next position.
- ``samples``: n answers at temperature > 0; their vote distribution is the probability vector.
  The n samples are one voter's one vote.
- ``verbalized``: the model states a confidence; the remaining mass is spread evenly over the
  other classes (the model says nothing about them).

``probs`` is a vector over ``output.choices_of`` (schema order); ``confidence`` is the chosen
label's entry. Where a vector has no meaning (multi-label, logprobs absent) it is None rather
than a made-up constant.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from llmlabel.schema import Label, canonical_json

Entry = dict[str, Any]


def _alternatives(entry: Entry) -> dict[str, float]:
    alts: dict[str, float] = {}
    for alt in entry.get("top_logprobs") or []:
        tok, lp = alt.get("token"), alt.get("logprob")
        if isinstance(tok, str) and isinstance(lp, int | float) and lp > alts.get(tok, -math.inf):
            alts[tok] = float(lp)
    tok, lp = entry.get("token"), entry.get("logprob")
    if isinstance(tok, str) and isinstance(lp, int | float):
        alts.setdefault(tok, float(lp))
    return alts


def _compatible(value: str, text: str, quoted: bool) -> bool:
    """Can generated ``text`` be the start of (or exactly) ``value`` followed by its end?"""
    if len(text) <= len(value):
        return value.startswith(text)
    if not text.startswith(value):
        return False
    rest = text[len(value):]
    return rest.startswith('"') if quoted else not rest[0].isdigit()


def _dist(tokens: list[Entry], pos: int, consumed: str, head: str, candidates: list[str],
          quoted: bool, top_k: int, depth: int = 0) -> dict[str, float]:
    entry = tokens[pos]
    masses: dict[str, float] = defaultdict(float)
    alts = _alternatives(entry)
    for tok, lp in alts.items():
        if head:  # the first token may carry the opening quote or a space before the value
            if not tok.startswith(head):
                continue
            tok = tok[len(head):]
        text = consumed + tok
        if not tok:
            continue
        matching = [v for v in candidates if _compatible(v, text, quoted)]
        if not matching:
            continue
        p = math.exp(lp)
        if len(matching) == 1:
            masses[matching[0]] += p
        elif tok == entry.get("token", "")[len(head):] and pos + 1 < len(tokens) and depth < 8:
            for v, q in _dist(tokens, pos + 1, text, "", matching, quoted, top_k, depth + 1).items():
                masses[v] += p * q
        else:
            for v in matching:
                masses[v] += p / len(matching)
    if top_k and len(entry.get("top_logprobs") or []) >= top_k:
        # the list was cut at top_k: a label missing from it is less likely than the last one
        # listed, not impossible; give it that bound rather than zero (else a weak model that
        # ranks one label 10th looks certain of it)
        floor = math.exp(min(alts.values()))
        for v in candidates:
            masses.setdefault(v, floor)
    total = sum(masses.values())
    return {v: m / total for v, m in masses.items()} if total > 0 else {}


def logprob_probs(
    logprobs: list[Entry] | None, field: str, values: Sequence[Any], top_k: int = 0
) -> list[float] | None:
    """Probability vector over ``values`` from the logprobs of the label field's value token;
    ``top_k`` is the number of alternatives asked for (a full list may have cut labels off)."""
    if not logprobs:
        return None
    texts = [str(e.get("token", "")) for e in logprobs]
    content = "".join(texts)
    quoted = not all(isinstance(v, int) for v in values)
    m = re.search(r'"' + re.escape(field) + r'"\s*:\s*' + ('"' if quoted else ""), content)
    if m is None:
        return None
    start, offset = m.end(), 0
    for pos, tok in enumerate(texts):
        if offset + len(tok) > start:
            if not logprobs[pos].get("top_logprobs"):
                return None  # only the chosen token is known: no distribution to speak of
            head = content[offset:start]
            names = [str(v) for v in values]
            dist = _dist(logprobs, pos, "", head, names, quoted, top_k)
            if not dist:
                return None
            return [dist.get(n, 0.0) for n in names]
        offset += len(tok)
    return None


def sequence_confidence(logprobs: list[Entry] | None, field: str) -> float | None:
    """Probability of the generated value of ``field`` as a whole (multi-label lists)."""
    if not logprobs:
        return None
    texts = [str(e.get("token", "")) for e in logprobs]
    content = "".join(texts)
    m = re.search(r'"' + re.escape(field) + r'"\s*:\s*\[[^\]]*\]', content)
    if m is None:
        return None
    total, offset = 0.0, 0
    for entry, tok in zip(logprobs, texts, strict=True):
        if offset < m.end() and offset + len(tok) > m.start():
            total += float(entry.get("logprob") or 0.0)
        offset += len(tok)
    return math.exp(total)


def sample_distribution(labels: Sequence[Label], values: Sequence[Any], multi: bool) -> tuple[Label, list[float], float]:
    """(majority label, probability vector, confidence) from n sampled labels."""
    counts = Counter(canonical_json(lb) for lb in labels)
    by_key = {canonical_json(lb): lb for lb in labels}
    order = {canonical_json(v): i for i, v in enumerate(values)}
    best = max(counts, key=lambda k: (counts[k], -order.get(k, len(order))))
    n = len(labels)
    if multi:  # marginal frequency of each class across the sampled sets
        probs = [sum(1 for lb in labels if isinstance(lb, list) and v in lb) / n for v in values]
    else:
        probs = [counts.get(canonical_json(v), 0) / n for v in values]
    return by_key[best], probs, counts[best] / n


def verbalized_probs(chosen: Label, confidence: float, values: Sequence[Any]) -> list[float] | None:
    if chosen not in values:
        return None
    rest = (1.0 - confidence) / (len(values) - 1) if len(values) > 1 else 0.0
    return [confidence if v == chosen else rest for v in values]
